"""Training batches as a pure function of (epoch, step).

Nothing here carries hidden state across steps: the sample order of an epoch and
every augmentation draw are seeded from (run seed, epoch, step). That is what
makes a resumed run continue exactly where the killed one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pcdistill.engine.device import derive_seed
from pcdistill.errors import ConfigError
from pcdistill.transforms import PointAugment, ShapeAugment


@dataclass
class Batch:
    points: Tensor  # (B, N, 3) float32, augmented
    labels: Tensor  # (B,) int64
    index: Tensor  # (B,) int64 sample indices into the training set
    params: Tensor  # (B, P) float32 shape-augmentation parameters used
    copy: Tensor | None = None  # (B,) int64 recorded copy, offline distillation only
    teacher_logits: Tensor | None = None  # (B, C) float32 recorded teacher logits
    teacher_features: Tensor | None = None  # (B, D) float32 recorded teacher global feature

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(None if t is None else t.to(device, non_blocking=True) for t in vars(self).values())
        )


class AugmentedBatches:
    """Shuffled batches from in-memory clouds with freshly sampled shape augmentation."""

    def __init__(
        self,
        points: Tensor,
        labels: Tensor,
        batch_size: int,
        seed: int,
        shape_aug: ShapeAugment,
        point_aug: PointAugment | None = None,
    ) -> None:
        if len(points) < batch_size:
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the training set "
                f"({len(points)} samples)"
            )
        self.points, self.labels = points, labels
        self.batch_size, self.seed = batch_size, seed
        self.shape_aug, self.point_aug = shape_aug, point_aug

    @property
    def steps_per_epoch(self) -> int:
        # Drop the ragged last batch: a batch of one breaks BatchNorm in training mode.
        return len(self.points) // self.batch_size

    def order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(len(self.points), generator=g)

    def indices(self, epoch: int, step: int) -> Tensor:
        return self.order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]

    def batch(self, epoch: int, step: int) -> Batch:
        index = self.indices(epoch, step)
        rng = np.random.default_rng(derive_seed(self.seed, "shape", epoch, step))
        params = torch.from_numpy(self.shape_aug.sample(rng, len(index)))
        points = self.noise(self.shape_aug.apply(self.points[index], params), epoch, step)
        return Batch(points, self.labels[index], index, params)

    def noise(self, points: Tensor, epoch: int, step: int) -> Tensor:
        """Point-level augmentation, seeded by (epoch, step); never recorded."""
        if self.point_aug is None:
            return points
        g = torch.Generator().manual_seed(derive_seed(self.seed, "point", epoch, step))
        return self.point_aug(points, g)


class RecordedBatches(AugmentedBatches):
    """Batches rebuilt from offline records: each drawn sample takes one of its K recorded
    copies (seeded by epoch and step), its input is replayed from the stored parameters,
    and the teacher's stored logits ride along. No teacher is needed.
    """

    def __init__(
        self,
        points: Tensor,
        labels: Tensor,
        batch_size: int,
        seed: int,
        shape_aug: ShapeAugment,
        params: Tensor,
        logits: Tensor,
        point_aug: PointAugment | None = None,
        features: Tensor | None = None,
    ) -> None:
        super().__init__(points, labels, batch_size, seed, shape_aug, point_aug)
        if params.shape[:1] != points.shape[:1] or logits.shape[:2] != params.shape[:2]:
            raise ValueError(
                f"records cover {params.shape[0]} samples x {params.shape[1]} copies, "
                f"the training set has {points.shape[0]} samples"
            )
        self.params, self.logits, self.features = params, logits, features

    def batch(self, epoch: int, step: int) -> Batch:
        index = self.indices(epoch, step)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "copy", epoch, step))
        copy = torch.randint(self.params.shape[1], (len(index),), generator=g)
        params = self.params[index, copy]
        points = self.noise(self.shape_aug.apply(self.points[index], params), epoch, step)
        teacher = self.logits[index, copy].float()
        feats = None if self.features is None else self.features[index, copy].float()
        return Batch(points, self.labels[index], index, params, copy, teacher, feats)
