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


XYZ, NORMALS = ("x", "y", "z"), ("nx", "ny", "nz")


def parse_columns(spec: str) -> tuple[str, ...]:
    """A table's column names, comma separated, one per column: x, y, z (required), nx,
    ny, nz (normals, all three or none), any other name (i, r, g, b, label, _) for a
    column that is read past. ValueError saying what is wrong."""
    names = tuple(c.strip() for c in spec.split(","))
    if not all(names):
        raise ValueError(f"empty column name in {spec!r}")
    for n in XYZ + NORMALS:
        if names.count(n) > 1:
            raise ValueError(f"column {n!r} named twice in {spec!r}")
    if not set(XYZ) <= set(names):
        raise ValueError(f"{spec!r} must name the x, y and z columns")
    if 0 < len(set(NORMALS) & set(names)) < 3:
        raise ValueError(f"{spec!r} names some of nx, ny, nz: name all three or none")
    return names


def _unit_rows(v: np.ndarray) -> bool:
    return bool(np.all(np.abs(np.linalg.norm(v.astype(np.float64), axis=1) - 1) < 1e-2))


def _split_columns(
    table: np.ndarray, path: Path, columns: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A table of N rows -> float32 xyz and normals (or None).

    With `columns` (see `parse_columns`) the table must have exactly that many columns.
    Without, 3 columns are x y z and 6 are x y z nx ny nz (the ModelNet40 resampled
    layout) only if every row's last three are unit vectors; any other table (xyzrgb,
    xyzi, a label column) is refused with an error asking for `columns`, never guessed.
    """
    if table.ndim != 2 or len(table) == 0:
        raise DataError(f"{path}: expected N rows of numbers, got an array of shape {table.shape}")
    width = table.shape[1]
    if columns is not None and len(columns) != width:
        raise DataError(f"{path}: has {width} columns, but columns={','.join(columns)} "
                        f"names {len(columns)}")  # fmt: skip
    if columns is None:
        if width == 6 and not _unit_rows(table[:, 3:]):
            raise DataError(f"{path}: 6 columns whose last three are not unit normals; "
                            "name them, e.g. columns=x,y,z,r,g,b (data.columns, predict "
                            "--columns)")  # fmt: skip
        if width not in (3, 6):
            raise DataError(f"{path}: {width} columns; name them, e.g. columns=x,y,z"
                            f"{',i' if width == 4 else ',nx,ny,nz,label' if width == 7 else ''}"
                            " (data.columns, predict --columns)")  # fmt: skip
        columns = XYZ + NORMALS[: width - 3]
    table = table.astype(np.float32, copy=False)
    xyz = np.ascontiguousarray(table[:, [columns.index(n) for n in XYZ]])
    if NORMALS[0] not in columns:
        return xyz, None
    return xyz, np.ascontiguousarray(table[:, [columns.index(n) for n in NORMALS]])


def read_text_cloud(
    path: Path, columns: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points from a text file of rows, comma or whitespace separated. `.txt` rows are
    laid out as `columns` says (`_split_columns`: by default x y z, or x y z nx ny nz when
    those are unit normals); `.xyz` / `.pts` rows hold x y z first and anything after
    (intensity, colour), which is dropped unless `columns` names it, and a `.pts` may
    start with a line holding the count.

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
    if path.suffix.lower() in (".xyz", ".pts") and columns is None:
        if table.ndim != 2 or table.shape[1] < 3 or len(table) == 0:
            raise DataError(f"{path}: expected N rows of at least 3 numbers (x y z ...), "
                            f"got {table.shape}")  # fmt: skip
        table = table[:, :3]
    return _split_columns(table, path, columns)


def read_npy_cloud(
    path: Path, columns: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points from an .npy array of N rows, its columns as in `_split_columns`."""
    try:
        table = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {_why(e)}") from None
    if not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: expected a numeric array, got {table.dtype}")
    return _split_columns(table, path, columns)


TEXT_SUFFIXES = (".txt", ".xyz", ".pts")
MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl", ".glb")  # trimesh; a .ply may be points
LIDAR_SUFFIXES = (".las", ".laz")
CLOUD_SUFFIXES = (".npy", ".pcd", *LIDAR_SUFFIXES, *TEXT_SUFFIXES, *MESH_SUFFIXES)


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
    if normals is None:
        return _split_columns(np.asarray(xyz, dtype=np.float32), path, XYZ)
    table = np.concatenate([xyz, normals], axis=1).astype(np.float32)
    return _split_columns(table, path, XYZ + NORMALS)


def read_las_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points of an ASPRS LAS or LAZ (compressed) file, through laspy with the lazrs backend
    (the `formats` extra), relative to their centroid: georeferenced coordinates (a
    UTM northing is ~5e6 m) keep only decimetres in float32, so the centroid is taken
    off in float64 first. Every model input is centred and scaled anyway (the
    checkpoint's input recipe), so nothing downstream depends on the offset."""
    try:
        import laspy
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix} needs laspy: "
                        "pip install 'pcdistill[formats]'") from None  # fmt: skip
    try:
        las = laspy.read(path)
        xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    except Exception as e:  # laspy raises what its header and point parsing hit
        raise DataError(f"cannot read {path}: {type(e).__name__}: {_why(e)}") from None
    if len(xyz) == 0:
        raise DataError(f"{path}: no points")
    if not np.isfinite(xyz).all():
        raise DataError(f"{path}: non-finite coordinates")
    xyz = xyz - xyz.mean(axis=0)
    return _split_columns(xyz.astype(np.float32), path, XYZ)


def read_cloud_file(
    path: Path,
    num_points: int | None,
    seed: np.random.Generator,
    columns: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(xyz, normals or None) of any supported file, by its suffix; meshes are sampled on
    their surface with `seed`; `columns` lays out tables (.npy and text files; .pcd and
    meshes name their own fields). DataError naming the file for anything unsupported
    or bad."""
    suffix = path.suffix.lower()
    if suffix not in CLOUD_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                        f"use one of {', '.join(CLOUD_SUFFIXES)}")  # fmt: skip
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if suffix == ".npy":
        return read_npy_cloud(path, columns)
    if suffix == ".pcd":
        return read_pcd_cloud(path)
    if suffix in LIDAR_SUFFIXES:
        return read_las_cloud(path)
    if suffix in TEXT_SUFFIXES:
        return read_text_cloud(path, columns)
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
        return _split_columns(np.asarray(geom.vertices), path, XYZ)
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
