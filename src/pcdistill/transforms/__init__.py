"""Augmentations in two kinds (DESIGN.md).

Shape-level (`ShapeAugment`): parameters drawn by `sample`, replayed exactly by
`apply`; these are what offline records store. Point-level (`PointAugment`):
per-point noise, never recorded.
"""

from pcdistill.transforms.point import Jitter, PointAugment, RandomDropout, Shuffle
from pcdistill.transforms.shape import (
    AnisotropicScale,
    RotateUp,
    ShapeAugment,
    ShapeTransform,
    Translate,
    UniformScale,
    default_shape_augment,
)

__all__ = [
    "AnisotropicScale",
    "Jitter",
    "PointAugment",
    "RandomDropout",
    "RotateUp",
    "ShapeAugment",
    "ShapeTransform",
    "Shuffle",
    "Translate",
    "UniformScale",
    "default_shape_augment",
]
