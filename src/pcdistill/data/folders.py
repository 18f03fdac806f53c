"""Reader for class folders of meshes (.off/.obj/.ply) or point files (.npy/.txt/.ply).

Two layouts are accepted: `root/<class>/<split>/<file>` (the raw ModelNet
release) and `root/<split>/<class>/<file>`. Classes are the folder names in
sorted order, the same for every split, so train and test labels agree.
Meshes are sampled on their surface with a seed derived from the load seed and
the file's path, so a shape's sample does not depend on which other files exist.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np

from pcdistill.data.dataset import PointCloudSet, concat
from pcdistill.data.fileio import (
    CLOUD_SUFFIXES,
    SPLITS,
    check_split,
    one_shape,
    read_cloud_file,
    require_dir,
)
from pcdistill.data.preprocess import PointSelector
from pcdistill.errors import DataError


def _subdirs(path: Path) -> list[Path]:
    """Sub-folders, without hidden ones and archive debris such as __MACOSX/."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def folder_layout(root: Path) -> dict[str, dict[str, Path]] | None:
    """{class: {split: folder}} for either layout, or None when neither fits."""
    if any((root / s).is_dir() for s in SPLITS):
        names = sorted({d.name for s in SPLITS for d in _subdirs(root / s)})
        return {c: {s: root / s / c for s in SPLITS} for c in names} or None
    classes = [d for d in _subdirs(root) if any((d / s).is_dir() for s in SPLITS)]
    return {d.name: {s: d / s for s in SPLITS} for d in classes} or None


def read_folders(
    root: str | Path,
    split: str = "train",
    *,
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    seed: int = 0,
    columns: tuple[str, ...] | None = None,
) -> PointCloudSet:
    """Every supported file of one split, in class then file-name order; `columns` lays
    out its tables (`fileio.read_cloud_file`)."""
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
    skipped: list[Path] = []
    for label, cls in enumerate(class_names):
        folder = layout[cls][split]
        files = [p for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []
        readable = [p for p in files if p.suffix.lower() in CLOUD_SUFFIXES]
        other = [p for p in files if p.suffix.lower() not in CLOUD_SUFFIXES and p.name[0] != "."]
        if not readable:  # a class without shapes would train a dead output
            found = f"only {_names(other, root)}" if other else "no files"
            raise DataError(
                f"{folder}: class {cls!r} has no shapes for split {split!r} ({found}; "
                f"readable: {', '.join(CLOUD_SUFFIXES)})"
            )
        skipped += other
        for path in readable:
            key = zlib.crc32(path.relative_to(root).as_posix().encode())
            rng = np.random.default_rng([seed, key])
            xyz, nrm = read_cloud_file(path, num_points, rng, columns)
            if normals and nrm is None:
                raise DataError(f"{path}: has no normals")
            parts.append(select(one_shape(path, xyz, nrm if normals else None, label, class_names)))
    if skipped:
        warnings.warn(
            f"{root}: skipped {_names(skipped, root)} (readable: {', '.join(CLOUD_SUFFIXES)})",
            stacklevel=2,
        )
    return concat(parts, name=f"{root}:{split}")


def _names(paths: list[Path], root: Path, show: int = 3) -> str:
    """'N file(s) of other types: a, b, c, ...' with paths relative to root."""
    shown = ", ".join(p.relative_to(root).as_posix() for p in paths[:show])
    return f"{len(paths)} file(s) of other types: {shown}{', ...' if len(paths) > show else ''}"
