"""One entry point for every format: detect it, read a split, then preprocess.

Order of work: read (each file brought to `num_points`), rotate into the z-up frame,
keep `classes`, normalise, then FPS-order, so the FPS order is exact for the points
returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pcdistill.data.dataset import PointCloudSet
from pcdistill.data.fileio import parse_columns
from pcdistill.data.folders import folder_layout, read_folders
from pcdistill.data.frames import format_up_axis, to_canonical
from pcdistill.data.modelnet_h5 import read_modelnet_h5
from pcdistill.data.modelnet_resampled import read_modelnet_resampled
from pcdistill.data.preprocess import normalize_unit_sphere, to_fps_order
from pcdistill.data.scanobjectnn import VARIANTS, read_scanobjectnn
from pcdistill.errors import DataError

READERS = {
    "modelnet_h5": read_modelnet_h5,
    "modelnet_resampled": read_modelnet_resampled,
    "scanobjectnn": read_scanobjectnn,
    "folders": read_folders,
}
MODELNET10_CLASSES = (
    "bathtub", "bed", "chair", "desk", "dresser",
    "monitor", "night_stand", "sofa", "table", "toilet",
)  # fmt: skip
BUILTIN_ROOT = Path(__file__).parent / "builtin"


def detect_format(root: str | Path) -> str:
    """Name of the reader whose marker files are present in `root`."""
    root = Path(root)
    if root.is_file() and root.suffix == ".h5":
        return "scanobjectnn"
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    if (root / "shape_names.txt").is_file():
        return "modelnet_h5"
    if (root / "modelnet40_shape_names.txt").is_file():
        return "modelnet_resampled"
    folders = {folder for folder, _ in VARIANTS.values()}
    if root.name in folders or any((root / f).is_dir() for f in folders):
        return "scanobjectnn"
    if folder_layout(root) is not None:
        return "folders"
    raise DataError(
        f"cannot tell the dataset format of {root}; looked for shape_names.txt "
        "(ModelNet40 HDF5), modelnet40_shape_names.txt (modelnet40_normal_resampled), "
        "main_split/ or main_split_nobg/ (ScanObjectNN), and <class>/{train,test}/ or "
        "{train,test}/<class>/ folders of .off/.obj/.ply/.npy/.txt files"
    )


def _class_list(classes: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        if classes.lower() != "modelnet10":
            raise DataError(f"unknown class set {classes!r}; pass 'modelnet10' or a list of names")
        return MODELNET10_CLASSES
    return tuple(classes)


def load_dataset(
    root: str | Path,
    split: str = "train",
    *,
    format: str = "auto",
    num_points: int | None = None,
    sampling: str = "first",
    normals: bool = False,
    classes: str | Sequence[str] | None = None,
    normalize: bool = False,
    fps_order: bool = False,
    seed: int = 0,
    variant: str = "OBJ_BG",
    up_axis: str | None = None,
    columns: str | None = None,
) -> PointCloudSet:
    """Read one split of a dataset in any supported format.

    num_points/sampling: bring every shape to this many points, taking the
    "first" ones, a seeded "random" subset, or an "fps" sample (FPS order).
    classes: None (all), "modelnet10", or a list of names, relabelled 0..k-1.
    normalize: centre each shape and scale it into the unit sphere.
    fps_order: store each cloud in full FPS order (see `to_fps_order`), so FPS-m is
        the first m points; exact for the clouds as returned, and after translation,
        rotation or uniform scaling, but not after anisotropic scaling.
    variant: the ScanObjectNN variant (OBJ_BG, OBJ_ONLY, PB_T50_RS, ...).
    up_axis: the files' up axis, None for the format's own (`frames.FORMAT_UP`); every
        set is returned z up (`frames.to_canonical`).
    columns: the column names of class folders' table files (`fileio.parse_columns`).
    """
    fmt = detect_format(root) if format == "auto" else format
    if fmt not in READERS:
        raise DataError(f"unknown dataset format {fmt!r}; use 'auto' or one of {list(READERS)}")
    options = {"num_points": num_points, "sampling": sampling, "normals": normals, "seed": seed}
    if fmt == "scanobjectnn":
        options["variant"] = variant
    if columns is not None:
        if fmt != "folders":
            raise DataError(f"columns={columns!r} lays out class folders' table files; "
                            f"{root} is a {fmt} dataset, whose layout is fixed")  # fmt: skip
        try:
            options["columns"] = parse_columns(columns)
        except ValueError as e:
            raise DataError(f"columns: {e}") from None
    data = to_canonical(READERS[fmt](root, split, **options), up_axis or format_up_axis(fmt))
    if classes is not None:
        data = data.filter_classes(_class_list(classes))
    if normalize:
        data = normalize_unit_sphere(data)
    if fps_order:
        data = to_fps_order(data)
    return data


def builtin_dataset(split: str = "train", **options) -> PointCloudSet:
    """The small real ModelNet40 cut shipped with the package (8 train / 3 test per class).

    Made by scripts/make_builtin.py; `provenance.json` beside it names each
    shape's source file and row in the full ModelNet40 HDF5 release.
    """
    return load_dataset(BUILTIN_ROOT, split, format="modelnet_h5", **options)
