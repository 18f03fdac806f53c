"""Point-level augmentations: per-point noise that is never recorded.

These act after the shape-level augmentation on the student side; an offline
record stores only shape parameters, so anything here is fresh every epoch.
Each takes a torch.Generator so a training run stays reproducible from its seed.
Note: shuffle and dropout reorder or replace points, so they break the FPS-order
cache (DESIGN.md); leave them off when training with `fps_ordered=True`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pcdistill.errors import ConfigError


class Jitter:
    """Add clipped Gaussian noise to every coordinate (PointNet's jitter)."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        if sigma < 0 or clip < 0:
            raise ConfigError(f"jitter needs sigma, clip >= 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip = sigma, clip

    def __call__(self, points: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(points.shape, generator=generator, device=generator.device)
        noise = (self.sigma * noise).clamp_(-self.clip, self.clip)
        return points + noise.to(points.device, points.dtype)


class RandomDropout:
    """Replace a random fraction (up to max_ratio) of each cloud's points by its first point.

    Keeps the point count fixed, as PointNet++ does, so batches stay rectangular.
    """

    def __init__(self, max_ratio: float = 0.875) -> None:
        if not 0 <= max_ratio < 1:
            raise ConfigError(f"dropout max_ratio must be in [0, 1), got {max_ratio}")
        self.max_ratio = max_ratio

    def __call__(self, points: Tensor, generator: torch.Generator) -> Tensor:
        b, n, _ = points.shape
        ratio = torch.rand(b, 1, generator=generator, device=generator.device) * self.max_ratio
        drop = torch.rand(b, n, generator=generator, device=generator.device) <= ratio
        drop = drop.to(points.device)
        return torch.where(drop[..., None], points[:, :1], points)


class Shuffle:
    """Permute the points of each cloud independently."""

    def __call__(self, points: Tensor, generator: torch.Generator) -> Tensor:
        b, n, _ = points.shape
        keys = torch.rand(b, n, generator=generator, device=generator.device)
        order = keys.argsort(dim=1).to(points.device)
        return points.gather(1, order[..., None].expand(-1, -1, points.shape[2]))


class PointAugment:
    """Apply point-level augmentations in order."""

    def __init__(self, transforms: list) -> None:
        self.transforms = list(transforms)

    def __call__(self, points: Tensor, generator: torch.Generator) -> Tensor:
        for t in self.transforms:
            points = t(points, generator)
        return points
