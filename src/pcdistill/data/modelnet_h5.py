"""Reader for the official ModelNet40 HDF5 layout (`modelnet40_ply_hdf5_2048` and kin).

The root holds `shape_names.txt` (line i is class i), `{train,test}_files.txt`
listing shards, and shards `ply_data_*.h5` with `data` (S, N, 3), `label` and,
in the official release, `normal`. Shard lists carry paths from the original
author's machine, so shards are resolved by file name inside the root.
"""

from __future__ import annotations

from pathlib import Path

from pcdistill.data.dataset import PointCloudSet, concat
from pcdistill.data.fileio import check_split, read_h5_set, read_list, require_dir
from pcdistill.data.preprocess import PointSelector


def read_modelnet_h5(
    root: str | Path,
    split: str = "train",
    *,
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    seed: int = 0,
) -> PointCloudSet:
    """All shards of one split, each brought to `num_points` (see PointSelector)."""
    root = require_dir(root)
    check_split(split)
    class_names = tuple(read_list(root / "shape_names.txt"))
    select = PointSelector(num_points, sampling, seed)
    shards = [root / Path(entry).name for entry in read_list(root / f"{split}_files.txt")]
    parts = [select(read_h5_set(path, class_names, normals)) for path in shards]
    return concat(parts, name=f"{root}:{split}")
