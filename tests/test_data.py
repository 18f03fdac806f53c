"""Readers give the real datasets' exact contents; preprocessing does what it says."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import trimesh

from pcdistill.data import (
    BUILTIN_ROOT,
    MODELNET10_CLASSES,
    SCANOBJECTNN_CLASSES,
    PointCloudSet,
    PointSelector,
    builtin_dataset,
    detect_format,
    load_dataset,
    normalize_unit_sphere,
    to_fps_order,
)
from pcdistill.errors import DataError
from pcdistill.ops import farthest_point_sample

# Official ModelNet40 split: class -> (train, test); dict order is label order.
MODELNET40_COUNTS = {
    "airplane": (626, 100), "bathtub": (106, 50), "bed": (515, 100), "bench": (173, 20),
    "bookshelf": (572, 100), "bottle": (335, 100), "bowl": (64, 20), "car": (197, 100),
    "chair": (889, 100), "cone": (167, 20), "cup": (79, 20), "curtain": (138, 20),
    "desk": (200, 86), "door": (109, 20), "dresser": (200, 86), "flower_pot": (149, 20),
    "glass_box": (171, 100), "guitar": (155, 100), "keyboard": (145, 20), "lamp": (124, 20),
    "laptop": (149, 20), "mantel": (284, 100), "monitor": (465, 100),
    "night_stand": (200, 86), "person": (88, 20), "piano": (231, 100), "plant": (240, 100),
    "radio": (104, 20), "range_hood": (115, 100), "sink": (128, 20), "sofa": (680, 100),
    "stairs": (124, 20), "stool": (90, 20), "table": (392, 100), "tent": (163, 20),
    "toilet": (344, 100), "tv_stand": (267, 100), "vase": (475, 100), "wardrobe": (87, 20),
    "xbox": (103, 20),
}  # fmt: skip


@pytest.fixture(scope="module")
def mn40(modelnet40_root: Path) -> dict[str, PointCloudSet]:
    return {split: load_dataset(modelnet40_root, split) for split in ("train", "test")}


def small_set(s: int = 3, n: int = 64, normals: bool = True) -> PointCloudSet:
    rng = np.random.default_rng(7)
    return PointCloudSet(
        points=rng.normal(size=(s, n, 3)).astype(np.float32),
        labels=np.arange(s, dtype=np.int64) % 2,
        class_names=("a", "b"),
        normals=rng.normal(size=(s, n, 3)).astype(np.float32) if normals else None,
        name="small",
    )


# --- the real ModelNet40 / ModelNet10 ---------------------------------------------------


@pytest.mark.realdata
def test_modelnet40_has_the_official_split(mn40):
    train, test = mn40["train"], mn40["test"]
    assert (len(train), len(test)) == (9843, 2468)
    assert train.class_names == test.class_names == tuple(MODELNET40_COUNTS)
    assert train.class_counts() == {c: n for c, (n, _) in MODELNET40_COUNTS.items()}
    assert test.class_counts() == {c: n for c, (_, n) in MODELNET40_COUNTS.items()}
    assert train.points.shape == (9843, 1024, 3) and train.points.dtype == np.float32
    assert train.labels.dtype == np.int64 and train.normals is None
    assert np.isfinite(train.points).all() and np.isfinite(test.points).all()
    # The files hold shapes already scaled into the unit sphere.
    assert np.linalg.norm(test.points, axis=2).max() == pytest.approx(1.0, abs=1e-5)


def _same_shapes_from_both_releases(shared_data: Path, up_axis: str | None):
    """(HDF5 rows, resampled clouds) of the resampled sample's shapes found in the HDF5
    copy (through its id2file json), both read by `load_dataset` and normalised."""
    resampled = shared_data / "modelnet40_normal_resampled_sample"
    names = [line.strip() for line in (resampled / "modelnet40_train.txt").open()]
    names += [line.strip() for line in (resampled / "modelnet40_test.txt").open()]
    rows = {}
    for split, files in (("train", 5), ("test", 2)):
        for k in range(files):
            ids = json.loads((shared_data / "modelnet40_hdf5_1024" /
                              f"ply_data_{split}_{k}_id2file.json").read_text())  # fmt: skip
            for i, name in enumerate(ids):
                rows[Path(name).stem] = (split, k, i)
    found = [n for n in names if n in rows]
    assert {"airplane_0001", "bathtub_0002"} <= set(found)
    h5 = []
    for n in found:
        split, k, i = rows[n]
        with h5py.File(shared_data / "modelnet40_hdf5_1024" / f"ply_data_{split}{k}.h5") as f:
            h5.append(f["data"][i])
    clouds = {}
    for split in ("train", "test"):
        d = load_dataset(resampled, split, up_axis=up_axis, normalize=True)
        order = [line.strip() for line in (resampled / f"modelnet40_{split}.txt").open()]
        clouds.update(zip(order, d.points, strict=True))
    return np.stack(h5), np.stack([clouds[n] for n in found])


def _mean_nearest(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance from each point of a (S, N, 3) to the nearest point of b's shape."""
    d = torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double())
    return float(d.min(-1).values.mean())


@pytest.mark.realdata
def test_the_resampled_release_is_read_into_the_hdf5_releases_frame(shared_data):
    """`modelnet40_normal_resampled` is y up, the HDF5 copy z up: read with the format's
    default the same shapes coincide (up to their different point samples); read as if
    z up they do not, which is what a model trained on one saw of the other."""
    h5, converted = _same_shapes_from_both_releases(shared_data, None)
    _, as_is = _same_shapes_from_both_releases(shared_data, "z")
    aligned, wrong = _mean_nearest(h5, converted), _mean_nearest(h5, as_is)
    assert aligned < 0.04 and wrong > 2 * aligned, (aligned, wrong)
    # the z extent (height) of an airplane is its shortest one in the canonical frame
    assert np.ptp(converted[0], axis=0).argmin() == 2


def test_up_axis_rotations_are_proper_and_move_up_to_z():
    from pcdistill.data.frames import ROTATIONS, rotate_to_z

    for axis, rotation in ROTATIONS.items():
        assert np.linalg.det(rotation) == pytest.approx(1.0)  # no mirroring
        up = np.zeros((1, 3), np.float32)
        up[0, "xyz".index(axis)] = 1
        np.testing.assert_array_equal(rotate_to_z(up, axis), [[0, 0, 1]])


@pytest.mark.realdata
def test_modelnet10_is_the_official_10_class_split(mn40, modelnet40_root):
    train = mn40["train"].filter_classes(MODELNET10_CLASSES)
    test = load_dataset(modelnet40_root, "test", classes="modelnet10")
    assert (len(train), len(test)) == (3991, 908)
    assert train.class_names == MODELNET10_CLASSES
    assert train.class_counts() == {c: MODELNET40_COUNTS[c][0] for c in MODELNET10_CLASSES}
    assert test.class_counts() == {c: MODELNET40_COUNTS[c][1] for c in MODELNET10_CLASSES}
    # Relabelled in the given order, points untouched: the first toilet is the same shape.
    full = mn40["test"]
    first_toilet = np.flatnonzero(full.labels == full.class_names.index("toilet"))[0]
    np.testing.assert_array_equal(test.points[test.labels == 9][0], full.points[first_toilet])


@pytest.mark.realdata
def test_builtin_is_the_recorded_rows_of_modelnet40(mn40, modelnet40_root):
    provenance = json.loads((BUILTIN_ROOT / "provenance.json").read_text())
    for split, per_class in (("train", 8), ("test", 3)):
        data = builtin_dataset(split)
        assert data.num_classes == 40 and data.num_points == 1024
        assert set(data.class_counts().values()) == {per_class}
        offsets, start = {}, 0
        for line in (modelnet40_root / f"{split}_files.txt").read_text().split():
            offsets[Path(line).name] = start
            with h5py.File(modelnet40_root / Path(line).name) as f:
                start += len(f["label"])
        rows = [offsets[p["file"]] + p["row"] for p in provenance[split]]
        assert data.fingerprint() == mn40[split].subset(rows).fingerprint()
        meshes = [p["mesh"].split("/")[0] for p in provenance[split]]
        assert meshes == [data.class_names[y] for y in data.labels]
    size = sum(p.stat().st_size for p in BUILTIN_ROOT.iterdir())
    assert size <= 5_000_000


# --- the other real formats -------------------------------------------------------------


def test_normal_resampled_sample(shared_data):
    root = shared_data / "modelnet40_normal_resampled_sample"
    assert detect_format(root) == "modelnet_resampled"
    train = load_dataset(root, "train", normals=True)
    test = load_dataset(root, "test", normals=True)
    assert train.points.shape == train.normals.shape == (4, 10000, 3)
    assert len(test) == 2 and train.num_classes == 40
    assert train.class_names[:2] == ("airplane", "bathtub")
    assert train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0, 1]
    # First line of airplane_0001.txt, (x, y, z) read y up, so z up as (-x, z, y); the
    # test split starts with airplane_0003. up_axis="z" keeps the file's own axes.
    np.testing.assert_array_equal(train.points[0, 0], np.float32([0.09879, 0.1638, -0.1823]))
    np.testing.assert_array_equal(train.normals[0, 0], np.float32([-0.829, -0.04818, -0.5572]))
    raw = load_dataset(root, "train", normals=True, up_axis="z")
    np.testing.assert_array_equal(raw.points[0, 0], np.float32([-0.09879, -0.1823, 0.1638]))
    np.testing.assert_array_equal(raw.normals[0, 0], np.float32([0.829, -0.5572, -0.04818]))
    first_line = (root / "airplane/airplane_0003.txt").read_text().split("\n", 1)[0]
    x, y, z = np.float32(first_line.split(",")[:3])
    np.testing.assert_array_equal(test.points[0, 0], [-x, z, y])
    # The official release marks some normals it could not compute as (1, 1, 1):
    # six points of bathtub_0001. They are kept as stored; all others are unit.
    placeholder = (raw.normals == 1).all(axis=2)  # in the file's own axes
    assert placeholder.sum() == placeholder[2].sum() == 6
    np.testing.assert_allclose(np.linalg.norm(train.normals[~placeholder], axis=1), 1, atol=1e-2)
    assert load_dataset(root, "test").normals is None


def test_scanobjectnn_sample(shared_data):
    split_dir = shared_data / "scanobjectnn_sample" / "main_split"
    for split, prefix in (("train", "training"), ("test", "test")):
        data = load_dataset(split_dir, split)
        assert data.points.shape == (10, 2048, 3) and data.class_names == SCANOBJECTNN_CLASSES
        with h5py.File(split_dir / f"{prefix}_objectdataset.h5") as f:
            np.testing.assert_array_equal(data.labels, f["label"][:])
            np.testing.assert_array_equal(data.points, f["data"][:])
        # The dataset root + variant and the direct file path give the same set.
        by_root = load_dataset(split_dir.parent, split, variant="OBJ_BG")
        direct = load_dataset(split_dir / f"{prefix}_objectdataset.h5", split)
        assert by_root.fingerprint() == direct.fingerprint() == data.fingerprint()
    assert SCANOBJECTNN_CLASSES[:3] == ("bag", "bin", "box") and len(SCANOBJECTNN_CLASSES) == 15


def test_official_h5_layout_with_normals_and_2048_points(tmp_path):
    # Like modelnet40_ply_hdf5_2048: two shards, 2048 points, a `normal` dataset, (S, 1) uint8.
    rng = np.random.default_rng(1)
    (tmp_path / "shape_names.txt").write_text("a\nb\nc\n")
    (tmp_path / "train_files.txt").write_text(
        "data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\ndata/x/ply_data_train1.h5\n"
    )
    shards = []
    for i, s in enumerate((3, 2)):
        shard = {
            "data": rng.normal(size=(s, 2048, 3)).astype(np.float32),
            "normal": rng.normal(size=(s, 2048, 3)).astype(np.float32),
            "label": rng.integers(0, 3, size=(s, 1)).astype(np.uint8),
            "faceId": np.zeros((s, 2048), dtype=np.int32),
        }
        with h5py.File(tmp_path / f"ply_data_train{i}.h5", "w") as f:
            for key, value in shard.items():
                f.create_dataset(key, data=value)
        shards.append(shard)
    data = load_dataset(tmp_path, "train", normals=True, num_points=1024, sampling="random")
    assert data.points.shape == data.normals.shape == (5, 1024, 3)
    np.testing.assert_array_equal(data.labels, np.concatenate([s["label"][:, 0] for s in shards]))
    points = np.concatenate([s["data"] for s in shards])
    normals = np.concatenate([s["normal"] for s in shards])
    for s in range(5):  # each picked point keeps its own normal
        rows = [np.flatnonzero((points[s] == p).all(1))[0] for p in data.points[s]]
        np.testing.assert_array_equal(data.normals[s], normals[s, rows])
    assert load_dataset(tmp_path, "train").normals is None


# --- folders of meshes and of point files -------------------------------------------------


MESHES = {
    "box": ("off", trimesh.creation.box(extents=(1, 1, 1))),
    "cylinder": ("obj", trimesh.creation.cylinder(radius=0.5, height=1.0)),
    "sphere": ("ply", trimesh.creation.icosphere(subdivisions=2, radius=1.0)),
}


def write_mesh_folders(root: Path, split_first: bool) -> None:
    for cls, (ext, mesh) in MESHES.items():
        for split, count in (("train", 2), ("test", 1)):
            folder = root / split / cls if split_first else root / cls / split
            folder.mkdir(parents=True)
            for i in range(count):
                mesh.export(folder / f"{cls}_{i:04d}.{ext}")


@pytest.mark.parametrize("split_first", [False, True])
def test_mesh_folders_sample_the_surface(tmp_path, split_first):
    write_mesh_folders(tmp_path, split_first)
    assert detect_format(tmp_path) == "folders"
    train = load_dataset(tmp_path, "train", num_points=256, normals=True, seed=3)
    test = load_dataset(tmp_path, "test", num_points=256)
    assert train.class_names == test.class_names == ("box", "cylinder", "sphere")
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.points.shape == (6, 256, 3) and test.normals is None
    box, cyl, sphere = train.points[0], train.points[2], train.points[4]
    np.testing.assert_allclose(np.abs(box).max(axis=1), 0.5, atol=1e-5)
    radial = np.linalg.norm(cyl[:, :2], axis=1)
    on_side = (radial > 0.5 * np.cos(np.pi / 32) - 1e-5) & (radial < 0.5 + 1e-5)
    assert (on_side | np.isclose(np.abs(cyl[:, 2]), 0.5, atol=1e-5)).all()
    norms = np.linalg.norm(sphere, axis=1)
    assert ((norms > 0.95) & (norms < 1 + 1e-5)).all()
    np.testing.assert_allclose(np.linalg.norm(train.normals, axis=2), 1.0, atol=1e-5)
    # Surface samples are seeded per file: same seed same points, new seed new points,
    # and two copies of one mesh get different samples.
    again = load_dataset(tmp_path, "train", num_points=256, normals=True, seed=3)
    assert again.fingerprint() == train.fingerprint()
    other = load_dataset(tmp_path, "train", num_points=256, normals=True, seed=4)
    assert other.fingerprint() != train.fingerprint()
    assert not np.array_equal(train.points[0], train.points[1])


def test_off_with_header_fused_to_counts(tmp_path):
    # Many raw ModelNet .off files start with "OFF490 518 0" instead of "OFF\n490 518 0".
    box = trimesh.creation.box(extents=(2, 2, 2))
    lines = trimesh.exchange.off.export_off(box).splitlines()
    (tmp_path / "box/train").mkdir(parents=True)
    (tmp_path / "box/train/box_0001.off").write_text("OFF" + "\n".join(lines[1:]) + "\n")
    data = load_dataset(tmp_path, num_points=64)
    np.testing.assert_allclose(np.abs(data.points[0]).max(axis=1), 1.0, atol=1e-5)


def test_off_with_no_faces_reads_as_points(tmp_path):
    """A point-only .off (vertices, 0 faces) is a point cloud: every vertex, in file order,
    duplicates kept (trimesh would merge them when processing a mesh)."""
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    (tmp_path / "pts/train").mkdir(parents=True)
    body = "\n".join(" ".join(f"{v:g}" for v in p) for p in pts)
    (tmp_path / "pts/train/p.off").write_text(f"OFF\n{len(pts)} 0 0\n{body}\n")
    data = load_dataset(tmp_path, num_points=5)
    np.testing.assert_array_equal(data.points[0], pts)
    assert data.normals is None


@pytest.mark.parametrize("split_first", [False, True])
def test_point_folders_bring_clouds_to_one_count(tmp_path, split_first):
    rng = np.random.default_rng(0)
    clouds = {
        "a.npy": rng.normal(size=(300, 3)).astype(np.float32),
        "b.txt": with_unit_normals(rng.normal(size=(200, 6))),  # comma, with normals
        "c.txt": rng.normal(size=(150, 3)).astype(np.float32),  # space separated
        "d.ply": rng.normal(size=(180, 3)).astype(np.float32),
        "e.xyz": rng.normal(size=(160, 4)).astype(np.float32),  # x y z intensity
        "f.pts": rng.normal(size=(140, 7)).astype(np.float32),  # count line, x y z r g b i
    }
    for i, (fname, cloud) in enumerate(clouds.items()):
        cls = "even" if i % 2 == 0 else "odd"
        folder = tmp_path / ("train" if split_first else cls) / (cls if split_first else "train")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / fname
        if fname.endswith(".npy"):
            np.save(path, cloud)
        elif fname == "b.txt":
            np.savetxt(path, cloud, delimiter=",", fmt="%.9g")
        elif fname == "c.txt":
            np.savetxt(path, cloud, fmt="%.9g")
        elif fname == "f.pts":
            np.savetxt(path, cloud, fmt="%.9g", header=str(len(cloud)), comments="")
        elif fname == "e.xyz":
            np.savetxt(path, cloud, fmt="%.9g")
        else:
            trimesh.PointCloud(cloud).export(path)
    data = load_dataset(tmp_path, "train", num_points=128)
    assert data.class_names == ("even", "odd") and data.points.shape == (6, 128, 3)
    # Order is class, then file name: even = a.npy, c.txt, e.xyz; odd = b.txt, d.ply, f.pts.
    for row, fname in enumerate(["a.npy", "c.txt", "e.xyz", "b.txt", "d.ply", "f.pts"]):
        np.testing.assert_array_equal(data.points[row], clouds[fname][:128, :3])
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def with_unit_normals(table: np.ndarray) -> np.ndarray:
    table = table.astype(np.float32)
    table[:, 3:] /= np.linalg.norm(table[:, 3:], axis=1, keepdims=True)
    return table


def test_table_columns_are_named_never_guessed(tmp_path):
    """Regression (issue 13): a 6-column .txt was always read as x y z + normals, so an
    xyzrgb scan trained on its colours as normals. Now 6 columns are normals only when
    they are unit vectors, any other table needs `data.columns`, and named columns pick
    x y z and the normals wherever they are (xyzi, xyzrgb, xyz + normals + label)."""
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    nrm = with_unit_normals(np.column_stack([xyz, rng.normal(size=(50, 3))]))[:, 3:]
    rgb = rng.integers(0, 256, size=(50, 3)).astype(np.float32)
    tables = {
        "xyzi": (np.column_stack([xyz, rng.random(50)]), "x,y,z,i", None),
        "xyzrgb": (np.column_stack([xyz, rgb]), "x,y,z,r,g,b", None),
        "normals_label": (np.column_stack([xyz, nrm, rng.integers(0, 9, 50)]),
                          "x,y,z,nx,ny,nz,label", nrm),
        "label_first": (np.column_stack([rng.integers(0, 9, 50), nrm, xyz]),
                        "label,nx,ny,nz,x,y,z", nrm),
    }  # fmt: skip
    for name, (table, columns, normals) in tables.items():
        root = tmp_path / name
        (root / "a" / "train").mkdir(parents=True)
        np.savetxt(root / "a" / "train" / "s.txt", table, fmt="%.9g")
        with pytest.raises(DataError, match=r"s\.txt: .*; name them, e\.g\. columns=x,y,z"):
            load_dataset(root, "train")
        data = load_dataset(root, "train", normals=normals is not None, columns=columns)
        np.testing.assert_array_equal(data.points[0], xyz)
        if normals is not None:
            np.testing.assert_array_equal(data.normals[0], normals)
    with pytest.raises(DataError, match=r"has 6 columns, but columns=x,y,z,i names 4"):
        load_dataset(tmp_path / "xyzrgb", "train", columns="x,y,z,i")
    with pytest.raises(DataError, match=r"columns: 'x,y,z,nx' names some of nx, ny, nz"):
        load_dataset(tmp_path / "xyzrgb", "train", columns="x,y,z,nx")
    with pytest.raises(DataError, match=r"lays out class folders' table files"):
        builtin_dataset("train", columns="x,y,z")


# --- fingerprint and set operations ---------------------------------------------------


def test_fingerprint_tracks_every_value_and_nothing_else():
    base = small_set()
    fp = base.fingerprint()
    assert len(fp) == 64 and fp == small_set().fingerprint()
    assert PointCloudSet(**{**vars(base), "name": "renamed"}).fingerprint() == fp
    moved = base.points.copy()
    moved[2, 10, 1] = np.nextafter(moved[2, 10, 1], np.float32(np.inf))
    relabelled = base.labels.copy()
    relabelled[0] = 1
    changes = [
        {"points": moved},
        {"labels": relabelled},
        {"class_names": ("a", "c")},
        {"normals": None},
    ]
    for change in changes:
        assert PointCloudSet(**{**vars(base), **change}).fingerprint() != fp, change


def test_fingerprint_is_pinned():
    # Records store this digest, so the scheme must not drift between versions or machines.
    data = PointCloudSet(
        points=np.arange(24, dtype=np.float32).reshape(2, 4, 3),
        labels=np.array([0, 1], dtype=np.int64),
        class_names=("x", "y"),
    )
    assert data.fingerprint() == (
        "888fb7e46986f169998a18a98a30c7eb65f603b9973a6673a563ba7c1e26d7a3"
    )


def test_subset_and_filter_classes():
    data = small_set(s=5)
    assert data.class_counts() == {"a": 3, "b": 2}
    sub = data.subset([4, 1])
    np.testing.assert_array_equal(sub.points, data.points[[4, 1]])
    np.testing.assert_array_equal(sub.normals, data.normals[[4, 1]])
    swapped = data.filter_classes(["b", "a"])
    assert swapped.class_names == ("b", "a") and swapped.labels.tolist() == [1, 0, 1, 0, 1]
    only_b = data.filter_classes(["b"])
    assert only_b.labels.tolist() == [0, 0]
    np.testing.assert_array_equal(only_b.points, data.points[[1, 3]])


# --- preprocessing ----------------------------------------------------------------------


def test_first_and_random_selection():
    data = small_set(s=4, n=64)
    first = PointSelector(16, "first")(data)
    np.testing.assert_array_equal(first.points, data.points[:, :16])
    np.testing.assert_array_equal(first.normals, data.normals[:, :16])
    rand = PointSelector(16, "random", seed=5)(data)
    assert rand.points.shape == (4, 16, 3)
    np.testing.assert_array_equal(rand.points, PointSelector(16, "random", seed=5)(data).points)
    assert not np.array_equal(rand.points, PointSelector(16, "random", seed=6)(data).points)
    for s in range(4):  # distinct original points, normals travelling with them
        rows = [np.flatnonzero((data.points[s] == p).all(1))[0] for p in rand.points[s]]
        assert len(set(rows)) == 16
        np.testing.assert_array_equal(rand.normals[s], data.normals[s, rows])
    assert PointSelector(None, "random")(data) is data


def test_fps_selection_matches_ops():
    data = builtin_dataset("test").subset(range(6))
    fps = PointSelector(128, "fps")(data)
    idx = farthest_point_sample(torch.from_numpy(data.points), 128).numpy()
    np.testing.assert_array_equal(fps.points, np.take_along_axis(data.points, idx[..., None], 1))


def test_normalize_unit_sphere():
    data = small_set()
    data = PointCloudSet(**{**vars(data), "points": data.points * 7 + np.float32(3)})
    out = normalize_unit_sphere(data)
    np.testing.assert_allclose(out.points.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.points, axis=2).max(axis=1), 1, atol=1e-6)
    assert out.points.dtype == np.float32 and out.normals is data.normals
    centred = data.points - data.points.mean(axis=1, keepdims=True)
    scale = np.linalg.norm(centred, axis=2).max(axis=1)[:, None, None]
    np.testing.assert_allclose(out.points, centred / scale, rtol=1e-6)


def test_fps_order_puts_every_fps_sample_first():
    data = builtin_dataset("test").subset(range(4))
    ordered = to_fps_order(data)
    xyz = torch.from_numpy(data.points)
    for m in (1, 16, 200, 1024):
        idx = farthest_point_sample(xyz, m).numpy()[..., None]
        expected = np.take_along_axis(data.points, idx, 1)
        np.testing.assert_array_equal(ordered.points[:, :m], expected)
    # A permutation: the same points, reordered.
    np.testing.assert_array_equal(
        np.sort(ordered.points.reshape(4, -1), axis=1), np.sort(data.points.reshape(4, -1), axis=1)
    )
    # FPS of the first M ordered points gives the same first m: later FPS is a slice.
    prefix = torch.from_numpy(np.ascontiguousarray(ordered.points[:, :256]))
    np.testing.assert_array_equal(
        farthest_point_sample(prefix, 64).numpy(), np.broadcast_to(np.arange(64), (4, 64))
    )


def test_load_options_compose():
    data = builtin_dataset(
        "test", num_points=256, sampling="random", classes="modelnet10",
        normalize=True, fps_order=True, seed=1,
    )  # fmt: skip
    assert data.points.shape == (30, 256, 3) and data.class_names == MODELNET10_CLASSES
    np.testing.assert_allclose(np.linalg.norm(data.points, axis=2).max(axis=1), 1, atol=1e-6)
    idx = farthest_point_sample(torch.from_numpy(data.points), 32).numpy()
    np.testing.assert_array_equal(idx, np.broadcast_to(np.arange(32), (30, 32)))


def test_detect_format(shared_data):
    assert detect_format(BUILTIN_ROOT) == "modelnet_h5"
    assert detect_format(shared_data / "scanobjectnn_sample") == "scanobjectnn"
    assert detect_format(shared_data / "scanobjectnn_sample/main_split") == "scanobjectnn"
