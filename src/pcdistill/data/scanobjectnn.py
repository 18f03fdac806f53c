"""Reader for ScanObjectNN h5 files (`data` (S, 2048, 3), `label` (S,), 15 classes).

Variants differ only by folder and file name: OBJ_BG is
`main_split/{training,test}_objectdataset.h5`, OBJ_ONLY the same names in
`main_split_nobg/`, and the perturbed PB_* variants carry a suffix such as
`_augmentedrot_scale75` (PB_T50_RS, the hardest and most reported one).
"""

from __future__ import annotations

from pathlib import Path

from pcdistill.data.dataset import PointCloudSet
from pcdistill.data.fileio import check_split, read_h5_set
from pcdistill.data.preprocess import PointSelector
from pcdistill.errors import DataError

SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip
VARIANTS = {  # name -> (folder, file-name suffix)
    "OBJ_BG": ("main_split", ""),
    "OBJ_ONLY": ("main_split_nobg", ""),
    "PB_T25": ("main_split", "_augmented25_norot"),
    "PB_T25_R": ("main_split", "_augmented25rot"),
    "PB_T50_R": ("main_split", "_augmentedrot"),
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
}
_FILE_PREFIX = {"train": "training", "test": "test"}


def scanobjectnn_file(root: str | Path, split: str, variant: str = "OBJ_BG") -> Path:
    """The h5 file of a split and variant under the dataset root or its variant folder.

    A direct .h5 path is returned as is, after checking that an official file
    name (training_* / test_*) agrees with `split`.
    """
    check_split(split)
    root = Path(root)
    if root.suffix == ".h5":
        other = "test" if split == "train" else "train"
        if root.name.startswith(_FILE_PREFIX[other] + "_"):
            raise DataError(f"{root} is a {other} file but split {split!r} was asked for")
        return root
    if variant.upper() not in VARIANTS:
        raise DataError(f"unknown ScanObjectNN variant {variant!r}; use one of {list(VARIANTS)}")
    folder, suffix = VARIANTS[variant.upper()]
    name = f"{_FILE_PREFIX[split]}_objectdataset{suffix}.h5"
    candidates = [root / folder / name] + ([root / name] if root.name == folder else [])
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(f"ScanObjectNN {variant} {split} file not found; looked for {looked}")


def read_scanobjectnn(
    root: str | Path,
    split: str = "train",
    *,
    variant: str = "OBJ_BG",
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    seed: int = 0,
) -> PointCloudSet:
    """One split of one variant (or one .h5 file), brought to `num_points`."""
    path = scanobjectnn_file(root, split, variant)
    if normals:
        raise DataError(f"{path}: ScanObjectNN has no normals")
    return PointSelector(num_points, sampling, seed)(
        read_h5_set(path, SCANOBJECTNN_CLASSES, normals=False)
    )
