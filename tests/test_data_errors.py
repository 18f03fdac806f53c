"""Every bad input gives one DataError that names the file, key or value at fault."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pcdistill.data import (
    BUILTIN_ROOT,
    PointCloudSet,
    PointSelector,
    builtin_dataset,
    detect_format,
    load_dataset,
    normalize_unit_sphere,
)
from pcdistill.errors import DataError


def h5_root(tmp: Path, data: np.ndarray, label: np.ndarray, classes: int = 3, **extra) -> Path:
    """A one-shard dataset in the official ModelNet40 HDF5 layout."""
    (tmp / "shape_names.txt").write_text("".join(f"c{i}\n" for i in range(classes)))
    (tmp / "train_files.txt").write_text("some/old/machine/ply_data_train0.h5\n")
    with h5py.File(tmp / "ply_data_train0.h5", "w") as f:
        for key, value in {"data": data, "label": label, **extra}.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return tmp


def cloud(s: int = 4, n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(s, n, 3)).astype(np.float32)


def labels(s: int = 4) -> np.ndarray:
    return np.zeros((s, 1), dtype=np.uint8)


def raises(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert match in str(info.value), str(info.value)
    return str(info.value)


# --- ModelNet40 HDF5 --------------------------------------------------------------------


def test_missing_root_and_files(tmp_path):
    raises("no_such_dir", load_dataset, tmp_path / "no_such_dir", format="modelnet_h5")
    raises("no_such_dir", load_dataset, tmp_path / "no_such_dir")
    root = shutil.copytree(BUILTIN_ROOT, tmp_path / "copy")
    (root / "ply_data_test0.h5").unlink()
    raises("ply_data_test0.h5", load_dataset, root, "test")
    (root / "shape_names.txt").unlink()
    raises("shape_names.txt", load_dataset, root, "train", format="modelnet_h5")


def test_shard_list_is_resolved_by_file_name(tmp_path):
    # The official lists say data/modelnet40_ply_hdf5_2048/...; only the name counts.
    root = h5_root(tmp_path, cloud(), labels())
    assert len(load_dataset(root)) == 4


def test_missing_keys(tmp_path):
    (tmp_path / "a").mkdir()
    msg = raises("'data'", load_dataset, h5_root(tmp_path / "a", None, labels()))
    assert "ply_data_train0.h5" in msg
    (tmp_path / "b").mkdir()
    raises("'label'", load_dataset, h5_root(tmp_path / "b", cloud(), None))
    raises("'normal'", load_dataset, h5_root(tmp_path / "b", cloud(), labels()), normals=True)


def test_truncated_and_corrupt_h5(tmp_path):
    root = shutil.copytree(BUILTIN_ROOT, tmp_path / "copy")
    shard = root / "ply_data_train0.h5"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])  # fails at open
    raises("ply_data_train0.h5", load_dataset, root, "train")
    shard.write_bytes(whole[: len(whole) // 2] + bytes(64) + whole[len(whole) // 2 + 64 :])
    raises("ply_data_train0.h5", load_dataset, root, "train")  # opens, fails decompressing
    shard.write_bytes(b"not an hdf5 file at all" * 100)
    raises("ply_data_train0.h5", load_dataset, root, "train")


def test_nan_and_inf_name_file_and_shape(tmp_path):
    data = cloud()
    data[2, 5, 1] = np.nan
    (tmp_path / "nan").mkdir()
    msg = raises("shape 2", load_dataset, h5_root(tmp_path / "nan", data, labels()))
    assert "ply_data_train0.h5" in msg
    data[2, 5, 1] = 0
    data[3, 0, 0] = np.inf
    (tmp_path / "inf").mkdir()
    raises("shape 3", load_dataset, h5_root(tmp_path / "inf", data, labels()))


def test_wrong_shapes(tmp_path):
    (tmp_path / "a").mkdir()
    raises("(4, 32, 2)", load_dataset, h5_root(tmp_path / "a", cloud()[..., :2], labels()))
    (tmp_path / "b").mkdir()
    raises("'label'", load_dataset, h5_root(tmp_path / "b", cloud(), labels(3)))


def test_label_outside_class_list(tmp_path):
    bad = labels()
    bad[1] = 3  # three classes: 0..2
    msg = raises("label 3", load_dataset, h5_root(tmp_path, cloud(), bad))
    assert "ply_data_train0.h5" in msg and "shape 1" in msg


def test_too_few_points_names_file_and_counts():
    msg = raises("ply_data_train0.h5", builtin_dataset, "train", num_points=2048)
    assert "1024" in msg and "2048" in msg


def test_unknown_options():
    raises("'val'", builtin_dataset, "val")
    raises("'h5'", load_dataset, BUILTIN_ROOT, format="h5")
    raises("'nearest'", builtin_dataset, "test", sampling="nearest")
    raises("'modelnet20'", builtin_dataset, "test", classes="modelnet20")
    raises("spaceship", builtin_dataset, "test", classes=["chair", "spaceship"])
    raises("num_points", PointSelector, 0)


def test_degenerate_shape_cannot_be_normalised():
    points = cloud(2, 8)
    points[1] = 0.5
    data = PointCloudSet(points, np.zeros(2, dtype=np.int64), ("a",), name="flat")
    raises("shape 1", normalize_unit_sphere, data)


def test_point_cloud_set_validates_types():
    raises("float32", PointCloudSet, cloud().astype(np.float64), np.zeros(4, np.int64), ("a",))
    raises("int64", PointCloudSet, cloud(), np.zeros(4, np.int32), ("a",))
    raises("normals", PointCloudSet, cloud(), np.zeros(4, np.int64), ("a",), cloud(4, 8))
    raises("unique", PointCloudSet, cloud(), np.zeros(4, np.int64), ("a", "a"))


# --- other formats ------------------------------------------------------------------------


def test_detect_format_lists_what_it_looked_for(tmp_path):
    (tmp_path / "stuff").mkdir()
    msg = raises(str(tmp_path), detect_format, tmp_path)
    for marker in ("shape_names.txt", "modelnet40_shape_names.txt", "main_split"):
        assert marker in msg


def test_scanobjectnn_variants(shared_data):
    root = shared_data / "scanobjectnn_sample"
    raises("PB_T99", load_dataset, root, variant="PB_T99")
    raises("main_split_nobg", load_dataset, root, variant="OBJ_ONLY")
    raises("objectdataset_augmentedrot_scale75.h5", load_dataset, root, variant="pb_t50_rs")
    raises("no normals", load_dataset, root, normals=True)
    raises("'test'", load_dataset, root / "main_split/training_objectdataset.h5", "test")


def write_resampled(root: Path, text: str) -> Path:
    (root / "chair").mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("chair\ndesk\n")
    (root / "modelnet40_train.txt").write_text("chair_0001\n")
    (root / "chair/chair_0001.txt").write_text(text)
    return root


def test_resampled_bad_files(tmp_path):
    good = "0,0,0,0,0,1\n1,0,0,0,0,1\n"
    root = write_resampled(tmp_path / "ok", good)
    assert load_dataset(root, normals=True).points.shape == (1, 2, 3)
    raises("chair_0001.txt", load_dataset, write_resampled(tmp_path / "nan", "nan,0,0,0,0,1\n"))
    raises("chair_0001.txt", load_dataset, write_resampled(tmp_path / "rag", good + "1,2\n"))
    raises("chair_0001.txt", load_dataset, write_resampled(tmp_path / "txt", "a,b,c,d,e,f\n"))
    raises("chair_0001.txt", load_dataset, write_resampled(tmp_path / "3", "0,0,0\n"), normals=True)
    (root / "modelnet40_train.txt").write_text("chair_0002\n")
    raises("chair_0002.txt", load_dataset, root)
    (root / "modelnet40_train.txt").write_text("sofa_0001\n")
    raises("'sofa'", load_dataset, root)


def test_folder_errors(tmp_path):
    (tmp_path / "flat" / "chair").mkdir(parents=True)
    np.save(tmp_path / "flat/chair/a.npy", cloud(1)[0])
    raises("neither", load_dataset, tmp_path / "flat", format="folders")

    root = tmp_path / "tree"
    for name, n in (("a.npy", 32), ("b.npy", 20)):
        (root / "chair/train").mkdir(parents=True, exist_ok=True)
        np.save(root / "chair/train" / name, cloud(1, n)[0])
    msg = raises("b.npy", load_dataset, root)  # two point counts, no num_points
    assert "20" in msg and "32" in msg
    raises("b.npy", load_dataset, root, num_points=24)  # 20 < 24
    assert load_dataset(root, num_points=20).points.shape == (2, 20, 3)
    raises("a.npy", load_dataset, root, num_points=20, normals=True)
    raises("no shapes", load_dataset, root, "test")

    np.save(root / "chair/train/c.npy", np.zeros((5, 4), np.float32))
    raises("c.npy", load_dataset, root, num_points=5)
    (root / "chair/train/c.npy").unlink()
    (root / "chair/train/d.off").write_text("OFF\nthis is not a mesh\n")
    raises("d.off", load_dataset, root, num_points=5)
    (root / "chair/train/d.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    raises("d.off", load_dataset, root)  # a mesh needs num_points to be sampled


def test_class_folders_refuse_an_empty_class_and_name_skipped_files(tmp_path):
    """A class whose files are all of an unreadable type is an error (it would train a dead
    output), other skipped files are named in one warning, and archive debris such as
    __MACOSX/ is not a class."""
    root = tmp_path / "tree"
    for cls in ("chair", "table"):
        (root / cls / "train").mkdir(parents=True)
        np.save(root / cls / "train" / "a.npy", cloud(1, 16)[0])
    (root / "chair/train/notes.md").write_text("hello")
    (root / "__MACOSX/train").mkdir(parents=True)
    (root / "__MACOSX/train/._a.npy").write_bytes(b"\0\0")
    skipped = r"skipped 1 file\(s\) of other types: chair/train/notes\.md"
    with pytest.warns(UserWarning, match=skipped):
        data = load_dataset(root)
    assert data.class_names == ("chair", "table")
    (root / "lamp/train").mkdir(parents=True)
    for i in range(4):
        (root / f"lamp/train/l{i}.e57").write_text("not read\n")
    msg = raises("'lamp'", load_dataset, root)
    assert "no shapes" in msg and "4 file(s) of other types: lamp/train/l0.e57" in msg
