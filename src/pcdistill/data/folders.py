"""Reader for class folders of meshes (.off/.obj/.ply) or point files (.npy/.txt/.ply).

Two layouts are accepted: `root/<class>/<split>/<file>` (the raw ModelNet
release) and `root/<split>/<class>/<file>`. Classes are the folder names in
sorted order, the same for every split, so train and test labels agree.
Meshes are sampled on their surface with a seed derived from the load seed and
the file's path, so a shape's sample does not depend on which other files exist.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pcdistill.data.dataset import PointCloudSet, concat
from pcdistill.data.fileio import (
    SPLITS,
    check_split,
    one_shape,
    read_npy_cloud,
    read_text_cloud,
    read_trimesh_cloud,
    require_dir,
)
from pcdistill.data.preprocess import PointSelector
from pcdistill.errors import DataError

SUFFIXES = (".off", ".obj", ".ply", ".npy", ".txt")


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_layout(root: Path) -> dict[str, dict[str, Path]] | None:
    """{class: {split: folder}} for either layout, or None when neither fits."""
    if any((root / s).is_dir() for s in SPLITS):
        names = sorted({d.name for s in SPLITS for d in _subdirs(root / s)})
        return {c: {s: root / s / c for s in SPLITS} for c in names} or None
    classes = [d for d in _subdirs(root) if any((d / s).is_dir() for s in SPLITS)]
    return {d.name: {s: d / s for s in SPLITS} for d in classes} or None


def _read_file(
    path: Path, num_points: int | None, seed: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() == ".npy":
        return read_npy_cloud(path)
    if path.suffix.lower() == ".txt":
        return read_text_cloud(path)
    return read_trimesh_cloud(path, num_points, seed)


def read_folders(
    root: str | Path,
    split: str = "train",
    *,
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    seed: int = 0,
) -> PointCloudSet:
    """Every supported file of one split, in class then file-name order."""
    root = require_dir(root)
    check_split(split)
    layout = folder_layout(root)
    if layout is None:
        raise DataError(
            f"{root}: neither root/<class>/{{train,test}}/<file> nor "
            f"root/{{train,test}}/<class>/<file> folders found"
        )
    class_names = tuple(layout)
    select = PointSelector(num_points, sampling, seed)
    parts = []
    for label, cls in enumerate(class_names):
        folder = layout[cls][split]
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        for path in (p for p in files if p.suffix.lower() in SUFFIXES and p.is_file()):
            key = zlib.crc32(path.relative_to(root).as_posix().encode())
            xyz, nrm = _read_file(path, num_points, np.random.default_rng([seed, key]))
            if normals and nrm is None:
                raise DataError(f"{path}: has no normals")
            parts.append(select(one_shape(path, xyz, nrm if normals else None, label, class_names)))
    return concat(parts, name=f"{root}:{split}")
