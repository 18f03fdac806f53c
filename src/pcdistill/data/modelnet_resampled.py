"""Reader for the official `modelnet40_normal_resampled` text layout.

The root holds `modelnet40_shape_names.txt`, split lists `modelnet40_{train,test}.txt`
of names like `night_stand_0001` (class = name minus its `_NNNN` suffix), and one
file `<class>/<name>.txt` per shape with 10,000 `x,y,z,nx,ny,nz` lines.
"""

from __future__ import annotations

from pathlib import Path

from pcdistill.data.dataset import PointCloudSet, concat
from pcdistill.data.fileio import (
    NORMALS,
    XYZ,
    check_split,
    one_shape,
    read_list,
    read_text_cloud,
    require_dir,
)
from pcdistill.data.preprocess import PointSelector
from pcdistill.errors import DataError

LAYOUT = XYZ + NORMALS  # every row of the release: x y z nx ny nz


def read_modelnet_resampled(
    root: str | Path,
    split: str = "train",
    *,
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    seed: int = 0,
) -> PointCloudSet:
    """The shapes of one split list, in list order, each brought to `num_points`."""
    root = require_dir(root)
    check_split(split)
    class_names = tuple(read_list(root / "modelnet40_shape_names.txt"))
    split_list = root / f"modelnet40_{split}.txt"
    select = PointSelector(num_points, sampling, seed)
    parts = []
    for shape in read_list(split_list):
        cls = shape.rsplit("_", 1)[0]
        if cls not in class_names:
            raise DataError(f"{split_list}: shape {shape!r} is of unknown class {cls!r}")
        path = root / cls / f"{shape}.txt"
        xyz, nrm = read_text_cloud(path, LAYOUT)
        if normals and nrm is None:
            raise DataError(f"{path}: has no normal columns (nx, ny, nz)")
        label = class_names.index(cls)
        parts.append(select(one_shape(path, xyz, nrm if normals else None, label, class_names)))
    return concat(parts, name=f"{root}:{split}")
