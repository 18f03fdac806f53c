"""Load-time preprocessing: point-count selection, unit-sphere normalisation, FPS order."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pcdistill.data.dataset import PointCloudSet
from pcdistill.errors import DataError
from pcdistill.ops import farthest_point_sample, fps_order

SAMPLING_METHODS = ("first", "random", "fps")
_FPS_CHUNK = 256  # shapes per FPS call: bounds the (B, N, 3) temporaries to a few MB


def _gather(data: PointCloudSet, idx: np.ndarray) -> PointCloudSet:
    """Reorder/select the points of every shape by per-shape indices (S, m)."""
    rows = idx[..., None]
    return dataclasses.replace(
        data,
        points=np.take_along_axis(data.points, rows, axis=1),
        normals=None if data.normals is None else np.take_along_axis(data.normals, rows, axis=1),
    )


def _fps_indices(points: np.ndarray, m: int | None) -> np.ndarray:
    """FPS indices (S, m) from pcdistill.ops, or the full FPS order when m is None."""
    out = []
    for start in range(0, len(points), _FPS_CHUNK):
        xyz = torch.from_numpy(points[start : start + _FPS_CHUNK])
        out.append(fps_order(xyz) if m is None else farthest_point_sample(xyz, m))
    if not out:
        return np.zeros((0, points.shape[1] if m is None else m), dtype=np.int64)
    return torch.cat(out).numpy()


class PointSelector:
    """Brings every shape of a file to `num_points` points: first, seeded random, or FPS.

    One selector serves a whole load, so "random" draws from one seeded numpy
    Generator in file order and the same call always picks the same points.
    """

    def __init__(self, num_points: int | None, sampling: str = "first", seed: int = 0):
        if sampling not in SAMPLING_METHODS:
            raise DataError(f"unknown sampling {sampling!r}; use one of {SAMPLING_METHODS}")
        if num_points is not None and num_points < 1:
            raise DataError(f"num_points must be positive, got {num_points}")
        self.num_points = num_points
        self.sampling = sampling
        self.rng = np.random.default_rng(seed)

    def __call__(self, data: PointCloudSet) -> PointCloudSet:
        m, n = self.num_points, data.num_points
        if m is None or (m == n and self.sampling != "fps"):
            return data
        if m > n:
            raise DataError(f"{data.name} has {n} points per shape, fewer than the {m} asked for")
        if self.sampling == "first":
            idx = np.broadcast_to(np.arange(m), (len(data), m))
        elif self.sampling == "random":
            idx = np.argsort(self.rng.random((len(data), n)), axis=1)[:, :m]
        else:
            idx = _fps_indices(data.points, m)
        return _gather(data, idx)


def normalize_unit_sphere(data: PointCloudSet) -> PointCloudSet:
    """Centre every shape at its centroid and scale its farthest point to norm 1.

    Normals are unchanged: translation and uniform scaling do not rotate them.
    """
    centred = data.points - data.points.mean(axis=1, keepdims=True)
    radius = np.linalg.norm(centred, axis=2).max(axis=1)
    flat = np.flatnonzero(radius == 0)
    if flat.size:
        raise DataError(f"{data.name}: shape {flat[0]} has all points equal; cannot normalise")
    return dataclasses.replace(data, points=(centred / radius[:, None, None]).astype(np.float32))


def is_unit_sphere(points: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether clouds (S, N, 3) are unit-sphere normalised, or point subsets of such clouds
    (a release's first 256 of 1,024 points): every point inside the unit ball (within
    tol), the clouds centred (median centroid norm <= 0.1) and filling the ball (median
    farthest-point norm >= 0.75). ModelNet40's HDF5 release is normalised to 1e-6; its
    first 256 points per shape have centroids within 0.08 and radii above 0.82."""
    if points.size == 0:
        return False
    radius = np.linalg.norm(points, axis=2).max(axis=1)
    centroid = np.linalg.norm(points.mean(axis=1), axis=1)
    return bool(radius.max() <= 1 + tol and np.median(centroid) <= 0.1
                and np.median(radius) >= 0.75)  # fmt: skip


def input_recipe(normalize: bool, train_points: np.ndarray) -> dict:
    """The preprocessing a model's inputs need at inference, recorded in its checkpoint.

    A model trained on unit-sphere clouds (normalised by `data.normalize`, or shipped so,
    as ModelNet40's HDF5 release is) only understands unit-sphere clouds, so every
    inference input is normalised; a model trained on clouds in their own units gets
    its inputs in their own units. Inputs are z up (`frames`): readers rotate into it."""
    if normalize:
        recipe = {"normalize": True, "why": "data.normalize"}
    elif is_unit_sphere(train_points):
        recipe = {"normalize": True, "why": "the training clouds are unit-sphere normalised"}
    else:
        recipe = {"normalize": False, "why": "the training clouds are in their own units"}
    return {**recipe, "up_axis": "z"}


def to_fps_order(data: PointCloudSet) -> PointCloudSet:
    """Reorder every cloud into full FPS order from its point 0 (the FPS prefix cache).

    Afterwards the first m points of a shape are exactly its FPS-m sample, and stay so
    under translation, rotation and uniform scaling, so later FPS calls become
    slicing. Anisotropic scaling (per-axis scale augmentation) changes distances
    unevenly, so after it the prefix is only an approximate FPS sample.
    """
    return _gather(data, _fps_indices(data.points, None))
