"""The record phase: run the teacher once over K augmented copies of every sample.

Work is cut into units of (block of `batch_size` samples, copy k), and the
parameters of copy k of sample i are drawn from a generator seeded by (seed, i, k).
So every unit's teacher batch, and each row it produces, is the same however many
shards (workers) the units are dealt to: shards from several machines merge by
copying files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pcdistill.data import PointCloudSet
from pcdistill.engine.device import derive_seed
from pcdistill.errors import ConfigError
from pcdistill.records.schema import RecordHeader, model_fingerprint
from pcdistill.records.writer import write_shard
from pcdistill.transforms import ShapeAugment


def copy_params(aug: ShapeAugment, seed: int, index: np.ndarray, copy: int) -> np.ndarray:
    """Parameters (len(index), P) of copy `copy` of each sample, independent of batching."""
    rows = [aug.sample(np.random.default_rng(derive_seed(seed, "record", int(i), copy)), 1)
            for i in index]  # fmt: skip
    return np.concatenate(rows) if rows else np.zeros((0, aug.num_params), np.float32)


@torch.no_grad()
def record_teacher(
    teacher: nn.Module,
    teacher_spec: dict,
    data: PointCloudSet,
    aug: ShapeAugment,
    copies: int,
    out: str | Path,
    *,
    seed: int = 0,
    batch_size: int = 64,
    shard: int = 0,
    num_shards: int = 1,
    features: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Path:
    """Record this shard's units into `out/records-{shard:05d}-of-{num_shards:05d}.h5`."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    if not 1 <= copies < 2**16:
        raise ValueError(f"copies must be in [1, 65535], got {copies}")
    path = Path(out) / f"records-{shard:05d}-of-{num_shards:05d}.h5"
    if path.exists():
        raise ConfigError(f"{path} already exists; delete it or record into another folder")
    teacher = teacher.to(device).eval()
    points = torch.from_numpy(data.points)
    blocks = range(0, len(data), batch_size)
    units = [(start, k) for start in blocks for k in range(copies)]
    mine = units[shard::num_shards]
    index, copy, params, logits, feats = [], [], [], [], []
    for start, k in tqdm(mine, desc=f"record shard {shard}", unit="batch", disable=not progress):
        idx = np.arange(start, min(start + batch_size, len(data)))
        p = copy_params(aug, seed, idx, k)
        x = aug.apply(points[idx], torch.from_numpy(p)).to(device)
        z, f = teacher(x, return_features=True)
        index.append(idx)
        copy.append(np.full(len(idx), k))
        params.append(p)
        logits.append(z.float().cpu().numpy())
        if features:
            feats.append(f["global"].float().cpu().numpy())
    header = RecordHeader(
        teacher_fingerprint=model_fingerprint(teacher, teacher_spec),
        teacher_spec=teacher_spec,
        dataset_fingerprint=data.fingerprint(),
        class_names=tuple(data.class_names),
        augment_spec=aug.spec(),
        num_samples=len(data),
        copies=copies,
        num_params=aug.num_params,
        feature_dim=teacher.global_dim if features else 0,
        shard=shard,
        num_shards=num_shards,
    )

    def cat(parts: list, width: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)

    return write_shard(
        path, header,
        np.concatenate(index) if index else np.zeros(0, np.int64),
        np.concatenate(copy) if copy else np.zeros(0, np.int64),
        cat(params, aug.num_params), cat(logits, len(data.class_names)),
        cat(feats, header.feature_dim) if features else None,
    )  # fmt: skip
