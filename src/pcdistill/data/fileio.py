"""Reading single files (lists, HDF5, text/npy clouds, meshes) with errors that name them.

Readers of whole datasets build on these, so every failure a user can cause with
a bad file surfaces as one DataError naming that file, never as an h5py, numpy or
trimesh traceback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import trimesh

from pcdistill.data.dataset import PointCloudSet
from pcdistill.errors import DataError

SPLITS = ("train", "test")


def _why(err: BaseException) -> str:
    """A library's error in one line (pydantic and numpy ones span several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(err).__name__


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {SPLITS}")


def require_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    return root


def read_list(path: Path) -> list[str]:
    """Non-empty stripped lines of a text list (class names, split lists, shard lists)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {_why(e)}") from None
    return [line.strip() for line in lines if line.strip()]


def read_h5_set(path: Path, class_names: tuple[str, ...], normals: bool) -> PointCloudSet:
    """The `data` (S, N, 3), `label` (S,) or (S, 1) and, if asked, `normal` of one h5 file."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    keys = ["data", "label"] + (["normal"] if normals else [])
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(f"{path}: no dataset {missing[0]!r}; it has {sorted(f.keys())}")
            arrays = {k: np.asarray(f[k][()]) for k in keys}
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        # h5py reports truncated or corrupt files as any of these, at open or at read.
        raise DataError(
            f"cannot read HDF5 file {path} (truncated or corrupt?): {_why(e)}"
        ) from None
    points, labels = arrays["data"], arrays["label"]
    if points.ndim != 3 or points.shape[2] != 3:
        raise DataError(f"{path}: 'data' must be (S, N, 3), got {points.shape}")
    if labels.size != len(points) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: 'label' must hold {len(points)} integers, got {labels.dtype} {labels.shape}"
        )
    normal = arrays.get("normal")
    if normal is not None and normal.shape != points.shape:
        raise DataError(f"{path}: 'normal' is {normal.shape} but 'data' is {points.shape}")
    return PointCloudSet(
        points=points.astype(np.float32, copy=False),
        labels=labels.reshape(-1).astype(np.int64),
        class_names=class_names,
        normals=None if normal is None else normal.astype(np.float32, copy=False),
        name=str(path),
    )


def _split_columns(table: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 3) xyz or (N, 6) xyz+normals table -> float32 xyz and normals (or None)."""
    if table.ndim != 2 or table.shape[1] not in (3, 6) or len(table) == 0:
        raise DataError(
            f"{path}: expected N rows of 3 (xyz) or 6 (xyz + normals) numbers, got {table.shape}"
        )
    table = table.astype(np.float32, copy=False)
    normals = np.ascontiguousarray(table[:, 3:]) if table.shape[1] == 6 else None
    return np.ascontiguousarray(table[:, :3]), normals


def read_text_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points from a text file of rows, comma or whitespace separated: `.txt` holds
    `x y z [nx ny nz]`; `.xyz` / `.pts` hold x y z first and anything after (intensity,
    colour), which is dropped, and a `.pts` may start with a line holding the count.

    np.loadtxt is a C parser since numpy 1.23: ~13 ms for a 10,000-line file
    here, faster than split()/fromstring alternatives.
    """
    try:
        with open(path) as f:
            first = f.readline()
        count_line = first.strip().isdigit()  # .pts: the number of points, then the rows
        delimiter = "," if "," in first else None
        with warnings.catch_warnings():  # an empty file is refused below, by its shape
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=delimiter, dtype=np.float32, ndmin=2,
                               skiprows=int(count_line))  # fmt: skip
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse {path}: {_why(e)}") from None
    if path.suffix.lower() in (".xyz", ".pts"):
        if table.ndim != 2 or table.shape[1] < 3 or len(table) == 0:
            raise DataError(f"{path}: expected N rows of at least 3 numbers (x y z ...), "
                            f"got {table.shape}")  # fmt: skip
        table = table[:, :3]
    return _split_columns(table, path)


def read_npy_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points from an .npy array of shape (N, 3) or (N, 6)."""
    try:
        table = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {_why(e)}") from None
    if not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: expected a numeric array, got {table.dtype}")
    return _split_columns(table, path)


TEXT_SUFFIXES = (".txt", ".xyz", ".pts")
MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl", ".glb")  # trimesh; a .ply may be points
CLOUD_SUFFIXES = (".npy", ".pcd", *TEXT_SUFFIXES, *MESH_SUFFIXES)


def read_pcd_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (and normals if it has normal_x/y/z) of a PCL .pcd file, ascii, binary or
    binary_compressed, through pypcd4 (the `formats` extra)."""
    try:
        from pypcd4 import PointCloud
    except ImportError:
        raise DataError(f"{path}: reading .pcd needs pypcd4: pip install 'pcdistill[formats]'") \
            from None  # fmt: skip
    try:
        cloud = PointCloud.from_path(path)
        fields = cloud.fields
        if not {"x", "y", "z"} <= set(fields):
            raise DataError(f"{path}: no x, y, z fields (it has {', '.join(fields)})")
        xyz = cloud.numpy(("x", "y", "z"))
        names = ("normal_x", "normal_y", "normal_z")
        normals = cloud.numpy(names) if set(names) <= set(fields) else None
    except DataError:
        raise
    except Exception as e:  # pypcd4 raises what its header and buffer parsing hit
        raise DataError(f"cannot read {path}: {type(e).__name__}: {_why(e)}") from None
    table = xyz if normals is None else np.concatenate([xyz, normals], axis=1)
    return _split_columns(np.asarray(table, dtype=np.float32), path)


def read_cloud_file(
    path: Path, num_points: int | None, seed: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """(xyz, normals or None) of any supported file, by its suffix; meshes are sampled on
    their surface with `seed`. DataError naming the file for anything unsupported or bad."""
    suffix = path.suffix.lower()
    if suffix not in CLOUD_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                        f"use one of {', '.join(CLOUD_SUFFIXES)}")  # fmt: skip
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if suffix == ".npy":
        return read_npy_cloud(path)
    if suffix == ".pcd":
        return read_pcd_cloud(path)
    if suffix in TEXT_SUFFIXES:
        return read_text_cloud(path)
    return read_trimesh_cloud(path, num_points, seed)


def read_trimesh_cloud(
    path: Path, num_points: int | None, seed: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points of a mesh (.off/.obj/.ply/.stl/.glb) sampled on its surface, or of a point cloud
    (a .ply point cloud, or a mesh file with vertices and no faces, e.g. `OFF` with 0 faces).

    Mesh samples carry the normal of the face they fall on; point clouds give xyz only.
    """
    try:
        geom = trimesh.load(path)
        if isinstance(geom, trimesh.Scene):
            geom = geom.to_geometry()
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces) == 0:
            geom = trimesh.load(path, process=False)  # every vertex, none merged
    except Exception as e:
        # trimesh raises whatever its parsers hit on a malformed file.
        raise DataError(f"cannot read {path}: {type(e).__name__}: {_why(e)}") from None
    if isinstance(geom, trimesh.PointCloud) or (
        isinstance(geom, trimesh.Trimesh) and len(geom.faces) == 0 and len(geom.vertices)
    ):
        return _split_columns(np.asarray(geom.vertices), path)
    if not isinstance(geom, trimesh.Trimesh) or not geom.area > 0:
        raise DataError(f"{path}: no mesh surface or points to sample")
    if num_points is None:
        raise DataError(f"{path} is a mesh: pass num_points to sample its surface")
    xyz, face = trimesh.sample.sample_surface(geom, num_points, seed=seed)
    return xyz.astype(np.float32), geom.face_normals[face].astype(np.float32)


def one_shape(
    path: Path,
    xyz: np.ndarray,
    normals: np.ndarray | None,
    label: int,
    class_names: tuple[str, ...],
) -> PointCloudSet:
    """A one-shape set named after its file, so validation errors point at that file."""
    return PointCloudSet(
        points=xyz[None],
        labels=np.array([label], dtype=np.int64),
        class_names=class_names,
        normals=None if normals is None else normals[None],
        name=str(path),
    )
