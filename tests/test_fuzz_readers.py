"""Fuzzing every file reader: a damaged file gives our one-line DataError, never another
exception type, and whatever is read has the promised shape (N, 3) float32.

Each reader starts from a valid file it reads; hypothesis then truncates it, flips
bytes, or overwrites a stretch. Examples are few and deadlines off so the suite stays
short; the seed is fixed (derandomize) so CI sees the same files every run.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcdistill.data.fileio import read_cloud_file, read_h5_set
from pcdistill.errors import DataError
from test_deploy_predict import write_las

pypcd4 = pytest.importorskip("pypcd4")

CLOUD = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _valid(suffix: str, folder: Path) -> bytes:
    """The bytes of a valid file of this kind."""
    path = folder / f"valid{suffix}"
    if suffix == ".npy":
        np.save(path, CLOUD)
    elif suffix in (".txt", ".xyz"):
        np.savetxt(path, CLOUD, delimiter="," if suffix == ".txt" else " ")
    elif suffix == ".pts":
        np.savetxt(path, CLOUD, header=str(len(CLOUD)), comments="")
    elif suffix == ".pcd":
        pypcd4.PointCloud.from_xyz_points(CLOUD).save(path)
    elif suffix in (".las", ".laz"):
        write_las(path, CLOUD.astype(np.float64))
    elif suffix == ".h5":
        with h5py.File(path, "w") as f:
            f["data"] = CLOUD[None]
            f["label"] = np.zeros((1, 1), np.uint8)
    else:
        trimesh.creation.icosphere(subdivisions=1).export(path)
    return path.read_bytes()


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".h5":
        return read_h5_set(path, ("a",), normals=False).points[0]
    return read_cloud_file(path, 32, np.random.default_rng(0))[0]


def _mutate(data: bytes, kind: str, at: float, value: bytes) -> bytes:
    i = int(at * len(data))
    if kind == "truncate":
        return data[:i]
    if kind == "flip":
        return data[:i] + bytes([data[i % len(data)] ^ 0xFF]) + data[i + 1 :]
    return data[:i] + value + data[i + len(value) :]  # overwrite a stretch


SUFFIXES = [".npy", ".txt", ".xyz", ".pts", ".pcd", ".las", ".laz", ".h5", ".off", ".ply", ".obj",
            ".stl"]  # fmt: skip


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(
    kind=st.sampled_from(["truncate", "flip", "overwrite"]),
    at=st.floats(0, 1, exclude_max=True),
    value=st.binary(min_size=1, max_size=16),
)
def test_a_damaged_file_is_one_clear_error_or_a_well_formed_cloud(
    tmp_path, suffix, kind, at, value
):
    original = _valid(suffix, tmp_path)
    assert _read(tmp_path / f"valid{suffix}").ndim == 2  # the undamaged file reads
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(_mutate(original, kind, at, value))
    try:
        xyz = _read(path)
    except DataError as err:
        assert str(path) in str(err) and "\n" not in str(err).strip()
        return
    assert xyz.dtype == np.float32 and xyz.ndim == 2 and xyz.shape[1] == 3 and len(xyz) > 0
