"""The offline record store: size, round trip, atomicity, and every refusal."""

import dataclasses

import numpy as np
import pytest
import torch

from pcdistill.errors import DataError
from pcdistill.models import create_model
from pcdistill.records import RecordHeader, model_fingerprint, read_records, row_dtype, write_shard
from pcdistill.transforms import default_shape_augment

CLASSES = tuple(f"c{i}" for i in range(40))
AUG = default_shape_augment().spec()


def header(**kw) -> RecordHeader:
    base = dict(
        teacher_fingerprint="t" * 64, teacher_spec={"name": "x"}, dataset_fingerprint="d" * 64,
        class_names=CLASSES, augment_spec=AUG, num_samples=6, copies=3, num_params=6,
    )  # fmt: skip
    return RecordHeader(**{**base, **kw})


def rows_for(samples, copies=3, seed=0):
    rng = np.random.default_rng(seed)
    i, k = np.meshgrid(np.asarray(samples), np.arange(copies), indexing="ij")
    n = i.size
    return (i.ravel(), k.ravel(), rng.normal(size=(n, 6)).astype(np.float32),
            rng.normal(size=(n, 40)).astype(np.float32))  # fmt: skip


def read(path, **kw):
    args = dict(dataset_fingerprint="d" * 64, class_names=CLASSES, augment_spec=AUG)
    return read_records(path, **{**args, **kw})


def test_a_copy_is_under_128_bytes_for_40_classes():
    assert row_dtype(num_params=6, num_classes=40).itemsize == 110  # 4 + 2 + 6*4 + 40*2
    assert row_dtype(num_params=7, num_classes=40).itemsize == 114  # with rotation
    assert row_dtype(num_params=7, num_classes=40).itemsize < 128


def test_round_trip_across_shards_and_on_disk_size(tmp_path):
    h = header(num_shards=2, num_samples=1000, copies=10)
    a = rows_for(range(0, 500), copies=10, seed=1)
    b = rows_for(range(500, 1000), copies=10, seed=2)
    write_shard(tmp_path / "r0.h5", dataclasses.replace(h, shard=0), *a)
    write_shard(tmp_path / "r1.h5", dataclasses.replace(h, shard=1), *b)
    rec = read(tmp_path)
    assert rec.logits.shape == (1000, 10, 40) and rec.logits.dtype == np.float16
    np.testing.assert_array_equal(rec.params[a[0], a[1]], a[2])
    np.testing.assert_array_equal(rec.logits[b[0], b[1]], b[3].astype(np.float16))
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.h5")) / 10_000
    assert on_disk < 128, f"{on_disk:.1f} bytes per copy on disk"
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"


def test_shards_and_checkpoints_get_the_umask_mode_not_0600(tmp_path):
    """Regression (issue 13): written through mkstemp, shards and checkpoints were 0600
    (owner only) whatever the umask; now they get what a plain open() would give."""
    import os

    from pcdistill.engine.checkpoint import atomic_save

    old = os.umask(0o022)
    try:
        shard = write_shard(tmp_path / "r.h5", header(), *rows_for(range(6)))
        atomic_save({"a": 1}, tmp_path / "c.pt")
        os.umask(0o077)
        atomic_save({"a": 1}, tmp_path / "private.pt")
    finally:
        os.umask(old)
    assert oct(shard.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "c.pt").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "private.pt").stat().st_mode & 0o777) == oct(0o600)


def test_refuses_another_dataset_class_list_or_augmentation(tmp_path):
    write_shard(tmp_path / "r.h5", header(), *rows_for(range(6)))
    with pytest.raises(DataError, match="another dataset"):
        read(tmp_path, dataset_fingerprint="e" * 64)
    with pytest.raises(DataError, match="class list"):
        read(tmp_path, class_names=CLASSES[::-1])
    with pytest.raises(DataError, match="augmentation"):
        read(tmp_path, augment_spec=default_shape_augment(rotate=True).spec())


def test_detects_truncated_and_tampered_shards(tmp_path):
    path = write_shard(tmp_path / "r.h5", header(), *rows_for(range(6)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"r\.h5 is truncated or corrupt"):
        read(path)
    path = write_shard(tmp_path / "s.h5", header(), *rows_for(range(6)))
    import h5py

    with h5py.File(path, "r+") as f:
        rows = f["rows"][()]
        rows["logits"][0, 0] += 1
        f["rows"][...] = rows
    with pytest.raises(DataError, match="checksum"):
        read(path)


def test_incomplete_or_repeated_sets_are_refused(tmp_path):
    h = header(num_shards=2)
    write_shard(tmp_path / "a" / "r0.h5", dataclasses.replace(h, shard=0), *rows_for(range(3)))
    with pytest.raises(DataError, match="missing \\[1\\]"):
        read(tmp_path / "a")
    write_shard(tmp_path / "a" / "r1.h5", dataclasses.replace(h, shard=1), *rows_for(range(2, 6)))
    with pytest.raises(DataError, match="sample 2 copy 0 is duplicated"):
        read(tmp_path / "a")
    write_shard(tmp_path / "b" / "r0.h5", header(), *rows_for(range(5)))
    with pytest.raises(DataError, match="sample 5 copy 0 is missing"):
        read(tmp_path / "b")
    write_shard(tmp_path / "c" / "r0.h5", dataclasses.replace(h, shard=0), *rows_for(range(3)))
    other = dataclasses.replace(h, shard=1, teacher_fingerprint="u" * 64)
    write_shard(tmp_path / "c" / "r1.h5", other, *rows_for(range(3, 6)))
    with pytest.raises(DataError, match="different recordings"):
        read(tmp_path / "c")


def test_model_fingerprint_follows_weights_and_architecture():
    torch.manual_seed(0)
    a = create_model("pointnet", num_classes=5, width=0.125)
    spec = {"name": "pointnet", "width": 0.125}
    fp = model_fingerprint(a, spec)
    assert fp == model_fingerprint(a, dict(spec))
    assert fp != model_fingerprint(a, {**spec, "width": 0.25})
    with torch.no_grad():
        next(a.parameters()).view(-1)[0] += 1e-3
    assert fp != model_fingerprint(a, spec)
