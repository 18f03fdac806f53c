"""One geometric frame for every dataset and file: z up, as the ModelNet40 HDF5 release.

Readers return clouds in their file's own axes; `to_canonical` then rotates them from
the source's up axis to z (a proper rotation, so shapes are not mirrored, and normals
turn with them). Each format has a default (`FORMAT_UP`) that `data.up_axis` or
`predict --up-axis` overrides.

The y-up rotation is the one that maps the official `modelnet40_normal_resampled`
release onto the HDF5 release: fitted on shapes present in both (airplane_0001 and
bathtub_0002 of ../shared/data, found in the HDF5 copy through its id2file json),
(x, y, z) -> (-x, z, y). For x up no pair of releases was at hand; the cyclic
(x, y, z) -> (y, z, x) is used.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pcdistill.data.dataset import PointCloudSet
from pcdistill.errors import DataError

UP_AXES = ("x", "y", "z")
# rows: canonical axes in terms of the source's; every matrix has determinant +1
ROTATIONS = {
    "z": np.eye(3, dtype=np.float32),
    "y": np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32),
    "x": np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32),
}
FORMAT_UP = {"modelnet_resampled": "y"}  # every other format: z


def format_up_axis(fmt: str) -> str:
    return FORMAT_UP.get(fmt, "z")


def rotate_to_z(points: np.ndarray, up_axis: str) -> np.ndarray:
    """Points (..., 3) from a frame whose up axis is `up_axis` into the z-up frame."""
    if up_axis not in ROTATIONS:
        raise DataError(f"up axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    if up_axis == "z":
        return points
    return np.ascontiguousarray(points @ ROTATIONS[up_axis].T)


def to_canonical(data: PointCloudSet, up_axis: str) -> PointCloudSet:
    """`data` (points and normals) rotated from `up_axis` up into the z-up frame."""
    if up_axis == "z":
        return data
    normals = None if data.normals is None else rotate_to_z(data.normals, up_axis)
    return dataclasses.replace(data, points=rotate_to_z(data.points, up_axis), normals=normals)
