"""Writing a shard: atomically, with a checksum of its rows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from pcdistill.atomic import temp_beside
from pcdistill.records.schema import RecordHeader, row_dtype


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
    path = Path(path)
    n = len(index)
    num_classes = len(header.class_names)
    dtype = row_dtype(header.num_params, num_classes, header.feature_dim)
    rows = np.empty(n, dtype=dtype)
    rows["index"], rows["copy"] = index, copy
    rows["params"] = np.asarray(params, dtype=np.float32).reshape(n, header.num_params)
    rows["logits"] = np.asarray(logits, dtype=np.float32).reshape(n, num_classes)
    if header.feature_dim:
        if features is None:
            raise ValueError("header.feature_dim > 0 but no features given")
        rows["feature"] = np.asarray(features, dtype=np.float32).reshape(n, header.feature_dim)
    tmp = temp_beside(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("rows", data=rows)
            f.attrs["header"] = header.to_json()
            f.attrs["rows_sha256"] = hashlib.sha256(rows.tobytes()).hexdigest()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
