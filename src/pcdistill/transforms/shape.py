"""Shape-level augmentations whose whole effect is a few recorded numbers.

Offline distillation (DESIGN.md) stores, per augmented copy, only the parameters
drawn by `sample`; the student rebuilds the teacher's exact input with `apply`.
So `sample` is the only random part, and `apply` is a pure, elementwise function
of (points, params): no matmul, no device-dependent reduction order, so replay on
the same device type is bit-exact.

Parameters are float32 rows, one per cloud; a composed augmentation concatenates
the rows of its parts in order.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pcdistill.errors import ConfigError

AXES = {"x": 0, "y": 1, "z": 2}


class ShapeTransform:
    """Base class: `num_params` numbers per cloud, drawn by `sample`, used by `apply`."""

    name: ClassVar[str]
    num_params: ClassVar[int]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def apply(self, points: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON-able description; records compare it to refuse a different augmentation."""
        return {"name": self.name, **vars(self)}


class AnisotropicScale(ShapeTransform):
    """Scale each axis by its own factor in [low, high] (DESIGN.md: [2/3, 3/2]).

    Not a similarity transform: it changes which points FPS picks, so an
    FPS-ordered cache is only approximate on scaled clouds.
    """

    name = "anisotropic_scale"
    num_params = 3

    def __init__(self, low: float = 2 / 3, high: float = 3 / 2) -> None:
        if not 0 < low <= high:
            raise ConfigError(
                f"anisotropic_scale needs 0 < low <= high, got low={low}, high={high}"
            )
        self.low, self.high = float(low), float(high)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, 3)).astype(np.float32)

    def apply(self, points: Tensor, params: Tensor) -> Tensor:
        return points * params[:, None, :]


class UniformScale(ShapeTransform):
    """Scale the whole cloud by one factor in [low, high]; keeps FPS order exact."""

    name = "uniform_scale"
    num_params = 1

    def __init__(self, low: float = 0.8, high: float = 1.25) -> None:
        if not 0 < low <= high:
            raise ConfigError(f"uniform_scale needs 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, 1)).astype(np.float32)

    def apply(self, points: Tensor, params: Tensor) -> Tensor:
        return points * params[:, None, :]


class Translate(ShapeTransform):
    """Shift the cloud by a vector with each component in [-shift, shift]."""

    name = "translate"
    num_params = 3

    def __init__(self, shift: float = 0.2) -> None:
        if shift < 0:
            raise ConfigError(f"translate needs shift >= 0, got {shift}")
        self.shift = float(shift)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-self.shift, self.shift, size=(n, 3)).astype(np.float32)

    def apply(self, points: Tensor, params: Tensor) -> Tensor:
        return points + params[:, None, :]


class RotateUp(ShapeTransform):
    """Rotate about the up axis by an angle in [-max_angle, max_angle] radians.

    The up axis of ModelNet40 as shipped in ../shared/data is z (original mesh
    axes); the official 2,048-point release and modelnet40_normal_resampled use y.
    """

    name = "rotate_up"
    num_params = 1

    def __init__(self, axis: str = "z", max_angle: float = math.pi) -> None:
        if axis not in AXES:
            raise ConfigError(f"rotate_up axis must be one of x, y, z, got {axis!r}")
        self.axis, self.max_angle = axis, float(max_angle)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-self.max_angle, self.max_angle, size=(n, 1)).astype(np.float32)

    def apply(self, points: Tensor, params: Tensor) -> Tensor:
        # cos/sin are computed on the CPU in float64 so every device sees the same coefficients.
        angle = params[:, 0].detach().cpu().double()
        cos = torch.cos(angle).float().to(points.device)[:, None]
        sin = torch.sin(angle).float().to(points.device)[:, None]
        up = AXES[self.axis]
        a, b = [i for i in range(3) if i != up]  # the rotated plane, right-handed about `up`
        if up == 1:
            a, b = b, a
        out = points.clone()
        out[..., a] = cos * points[..., a] - sin * points[..., b]
        out[..., b] = sin * points[..., a] + cos * points[..., b]
        return out


TRANSFORMS: dict[str, type[ShapeTransform]] = {
    t.name: t for t in (AnisotropicScale, UniformScale, Translate, RotateUp)
}


class ShapeAugment:
    """An ordered list of shape transforms with one concatenated parameter row per cloud."""

    def __init__(self, transforms: list[ShapeTransform]) -> None:
        self.transforms = list(transforms)
        self.num_params = sum(t.num_params for t in self.transforms)

    @classmethod
    def from_spec(cls, spec: list[dict[str, Any]]) -> ShapeAugment:
        """Rebuild from `spec()` (e.g. read back from a record shard or a config)."""
        if not isinstance(spec, list) or not all(isinstance(item, dict) for item in spec):
            raise ConfigError(
                "a shape augmentation spec is a list of {name: ..., option: value} mappings, "
                f"got {spec!r}"
            )
        parts = []
        for item in spec:
            kwargs = dict(item)
            name = kwargs.pop("name", None)
            if name not in TRANSFORMS:
                raise ConfigError(
                    f"unknown shape augmentation {name!r}; known: {', '.join(sorted(TRANSFORMS))}"
                )
            try:
                parts.append(TRANSFORMS[name](**kwargs))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"bad options for shape augmentation {name!r}: {err}") from None
        return cls(parts)

    def spec(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.transforms]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, num_params) float32 parameters, drawn part by part in order."""
        cols = [t.sample(rng, n) for t in self.transforms]
        return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0), np.float32)

    def apply(self, points: Tensor, params: Tensor | np.ndarray) -> Tensor:
        """Deterministic: the same (points, params) give bit-identical output."""
        if isinstance(params, np.ndarray):  # copy: record readers hand out read-only buffers
            params = torch.from_numpy(np.array(params, dtype=np.float32))
        params = params.to(device=points.device, dtype=torch.float32)
        if params.shape != (points.shape[0], self.num_params):
            raise ConfigError(
                f"augmentation params have shape {tuple(params.shape)}, "
                f"expected ({points.shape[0]}, {self.num_params})"
            )
        col = 0
        for t in self.transforms:
            points = t.apply(points, params[:, col : col + t.num_params])
            col += t.num_params
        return points

    def __repr__(self) -> str:
        return f"ShapeAugment({self.spec()})"


def default_shape_augment(rotate: bool = False, up_axis: str = "z") -> ShapeAugment:
    """The offline-KD augmentation of DESIGN.md: per-axis scale, translation, optional rotation."""
    parts: list[ShapeTransform] = [AnisotropicScale(), Translate()]
    if rotate:
        parts.insert(0, RotateUp(axis=up_axis))
    return ShapeAugment(parts)
