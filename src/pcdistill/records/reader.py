"""Reading and validating a set of shards before any training step uses them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pcdistill.errors import DataError
from pcdistill.records.schema import SCHEMA_VERSION, RecordHeader, row_dtype


@dataclass(frozen=True)
class RecordSet:
    """All copies of all samples, as dense arrays indexed [sample, copy]."""

    header: RecordHeader
    params: np.ndarray  # (S, K, P) float32
    logits: np.ndarray  # (S, K, C) float16
    features: np.ndarray | None  # (S, K, D) float16


def _read_shard(path: Path) -> tuple[RecordHeader, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            header = RecordHeader.from_json(f.attrs["header"])
            rows = f["rows"][()]
            digest = f.attrs["rows_sha256"]
    except (OSError, KeyError) as err:
        raise DataError(f"record shard {path} is truncated or corrupt ({err})") from None
    if header.schema_version != SCHEMA_VERSION:
        raise DataError(
            f"record shard {path} has schema version {header.schema_version}, "
            f"this pcdistill reads {SCHEMA_VERSION}"
        )
    expected = row_dtype(header.num_params, len(header.class_names), header.feature_dim)
    if rows.dtype != expected or hashlib.sha256(rows.tobytes()).hexdigest() != digest:
        raise DataError(f"record shard {path} is corrupt: its rows do not match their checksum")
    return header, rows


def _same_run(a: RecordHeader, b: RecordHeader) -> bool:
    keys = ("teacher_fingerprint", "dataset_fingerprint", "class_names", "augment_spec",
            "num_samples", "copies", "num_params", "feature_dim", "num_shards")  # fmt: skip
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def read_records(
    paths: str | Path | list[str | Path],
    *,
    dataset_fingerprint: str,
    class_names: tuple[str, ...] | list[str],
    augment_spec: list[dict[str, Any]],
) -> RecordSet:
    """Read a shard set (a folder of *.h5, or files) and check it against the run.

    Refuses records of another dataset, class list or augmentation, shards of
    different recordings, and a set that misses or repeats any (sample, copy).
    """
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        files = sorted(Path(paths).glob("*.h5"))
        if not files:
            raise DataError(f"no record shards (*.h5) in {paths}")
    else:
        files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for f in files:
        if not f.is_file():
            raise DataError(f"record shard not found: {f}")

    shards = [(f, *_read_shard(f)) for f in files]
    first_file, header, _ = shards[0]
    for f, h, _ in shards[1:]:
        if not _same_run(header, h):
            raise DataError(f"record shards {first_file} and {f} come from different recordings")
    if header.dataset_fingerprint != dataset_fingerprint:
        raise DataError(
            f"records in {first_file} were made on dataset {header.dataset_fingerprint[:12]}, "
            f"but this run's dataset is {dataset_fingerprint[:12]} (another dataset, split, "
            "point count or preprocessing)"
        )
    if tuple(header.class_names) != tuple(class_names):
        raise DataError(f"records in {first_file} use another class list than this run")
    if header.augment_spec != augment_spec:
        raise DataError(
            f"records in {first_file} were made with augmentation {header.augment_spec}, "
            f"but this run uses {augment_spec}"
        )
    present = sorted(h.shard for _, h, _ in shards)
    if present != list(range(header.num_shards)):
        missing = sorted(set(range(header.num_shards)) - set(present))
        raise DataError(
            f"record shard set {first_file.parent} is incomplete or repeats a shard: has shards "
            f"{present} of {header.num_shards}" + (f", missing {missing}" if missing else "")
        )

    s, k = header.num_samples, header.copies
    count = np.zeros((s, k), dtype=np.int64)
    params = np.zeros((s, k, header.num_params), dtype=np.float32)
    logits = np.zeros((s, k, len(header.class_names)), dtype=np.float16)
    features = np.zeros((s, k, header.feature_dim), np.float16) if header.feature_dim else None
    for f, _, rows in shards:
        i, c = rows["index"].astype(np.int64), rows["copy"].astype(np.int64)
        if len(rows) and (i.max() >= s or c.max() >= k):
            raise DataError(f"record shard {f} has a row outside {s} samples x {k} copies")
        np.add.at(count, (i, c), 1)
        params[i, c], logits[i, c] = rows["params"], rows["logits"]
        if features is not None:
            features[i, c] = rows["feature"]
    if (count != 1).any():
        bad = np.argwhere(count != 1)[0]
        what = "missing" if count[tuple(bad)] == 0 else "duplicated"
        n_bad = int((count != 1).sum())
        raise DataError(
            f"record shard set {first_file.parent}: sample {bad[0]} copy {bad[1]} is {what} "
            f"({n_bad} (sample, copy) pairs not recorded exactly once)"
        )
    return RecordSet(header, params, logits, features)
