"""Writing a shard: atomically, with a checksum of its rows, from rows given in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from pcdistill.atomic import replacing
from pcdistill.records.schema import RecordHeader, row_dtype


def shard_rows(
    header: RecordHeader,
    index: np.ndarray,
    copy: np.ndarray,
    params: np.ndarray,
    logits: np.ndarray,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """The packed rows (see `row_dtype`) of one batch of recorded copies."""
    n = len(index)
    num_classes = len(header.class_names)
    rows = np.empty(n, dtype=row_dtype(header.num_params, num_classes, header.feature_dim))
    rows["index"], rows["copy"] = index, copy
    rows["params"] = np.asarray(params, dtype=np.float32).reshape(n, header.num_params)
    rows["logits"] = np.asarray(logits, dtype=np.float32).reshape(n, num_classes)
    if header.feature_dim:
        if features is None:
            raise ValueError("header.feature_dim > 0 but no features given")
        rows["feature"] = np.asarray(features, dtype=np.float32).reshape(n, header.feature_dim)
    return rows


def write_shard(
    path: str | Path,
    header: RecordHeader,
    index: np.ndarray,
    copy: np.ndarray,
    params: np.ndarray,
    logits: np.ndarray,
    features: np.ndarray | None = None,
) -> Path:
    """Write rows to `path` via a temp file + rename, so a crash never leaves half a shard.

    One shard per worker (rank) keeps recording embarrassingly parallel.
    """
    rows = shard_rows(header, index, copy, params, logits, features)
    return write_shard_chunks(path, header, len(rows), [rows])


def write_shard_chunks(
    path: str | Path, header: RecordHeader, total: int, chunks: Iterable[np.ndarray]
) -> Path:
    """`write_shard` from `total` rows given as consecutive chunks, one in memory at a
    time; the file is the same however the rows are cut into chunks."""
    path = Path(path)
    dtype = row_dtype(header.num_params, len(header.class_names), header.feature_dim)
    digest = hashlib.sha256()
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        rows = f.create_dataset("rows", shape=(total,), dtype=dtype)
        start = 0
        for chunk in chunks:
            if chunk.dtype != dtype or start + len(chunk) > total:
                raise ValueError(f"chunk of {len(chunk)} {chunk.dtype} rows at row {start} "
                                 f"does not fit {total} rows of {dtype}")  # fmt: skip
            rows[start : start + len(chunk)] = chunk
            digest.update(chunk.tobytes())
            start += len(chunk)
        if start != total:
            raise ValueError(f"chunks hold {start} rows, not {total}")
        f.attrs["header"] = header.to_json()
        f.attrs["rows_sha256"] = digest.hexdigest()
    return path
