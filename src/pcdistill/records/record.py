"""The record phase: run the teacher once over K augmented copies of every sample.

Work is cut into units of (block of `batch_size` samples, copy k), and the
parameters of copy k of sample i are drawn from a generator seeded by (seed, i, k).
So every unit's teacher batch, and each row it produces, is the same however many
shards (workers) the units are dealt to: shards from several machines merge by
copying files.

Rows stream to disk: every `rows_per_chunk` rows (whole units) become one chunk file,
written atomically into `records-....h5.partial/` beside the shard, so memory holds one
chunk, not the table (K = 100 copies of ModelNet40 with 1,024-d features would be
2 GB). A killed recording leaves that folder, never a shard; rerunning the same
command continues after its last complete chunk (other settings are refused, naming
the difference), and the shard it finally writes is the same file as an uninterrupted
recording's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pcdistill.atomic import replacing
from pcdistill.data import PointCloudSet
from pcdistill.engine.device import derive_seed
from pcdistill.errors import ConfigError, DataError
from pcdistill.records.schema import RecordHeader, model_fingerprint, row_dtype
from pcdistill.records.writer import shard_rows, write_shard_chunks
from pcdistill.transforms import ShapeAugment


def copy_params(aug: ShapeAugment, seed: int, index: np.ndarray, copy: int) -> np.ndarray:
    """Parameters (len(index), P) of copy `copy` of each sample, independent of batching."""
    rows = [aug.sample(np.random.default_rng(derive_seed(seed, "record", int(i), copy)), 1)
            for i in index]  # fmt: skip
    return np.concatenate(rows) if rows else np.zeros((0, aug.num_params), np.float32)


ROWS_PER_CHUNK = 8192  # ~1 MB of rows without features, ~17 MB with 1,024-d ones


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
    rows_per_chunk: int = ROWS_PER_CHUNK,
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
    blocks = range(0, len(data), batch_size)
    units = [(start, k) for start in blocks for k in range(copies)][shard::num_shards]
    per_chunk = max(1, rows_per_chunk // batch_size)
    chunks = [units[i : i + per_chunk] for i in range(0, len(units), per_chunk)]
    plan = {"header": json.loads(header.to_json()), "seed": seed, "batch_size": batch_size,
            "units_per_chunk": per_chunk}  # fmt: skip
    partial = path.with_name(path.name + ".partial")
    done = _resume(partial, plan, header, chunks, batch_size, len(data))
    points = torch.from_numpy(data.points)
    bar = tqdm(total=len(units), initial=sum(map(len, chunks[:done])), unit="batch",
               desc=f"record shard {shard}", disable=not progress)  # fmt: skip
    for c in range(done, len(chunks)):
        parts = []
        for start, k in chunks[c]:
            idx = np.arange(start, min(start + batch_size, len(data)))
            p = copy_params(aug, seed, idx, k)
            x = aug.apply(points[idx], torch.from_numpy(p)).to(device)
            z, f = teacher(x, return_features=True)
            feats = f["global"].float().cpu().numpy() if features else None
            parts.append(shard_rows(header, idx, np.full(len(idx), k), p,
                                    z.float().cpu().numpy(), feats))  # fmt: skip
            bar.update()
        _save_atomic(partial / _chunk_name(c), np.concatenate(parts))
    bar.close()
    rows = (np.load(partial / _chunk_name(c), allow_pickle=False) for c in range(len(chunks)))
    total = sum(_chunk_rows(chunk, batch_size, len(data)) for chunk in chunks)
    write_shard_chunks(path, header, total, rows)
    shutil.rmtree(partial)
    return path


def _chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.npy"


def _chunk_rows(chunk: list[tuple[int, int]], batch_size: int, n: int) -> int:
    return sum(min(batch_size, n - start) for start, _ in chunk)


def _save_atomic(path: Path, rows: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, rows, allow_pickle=False)


def _resume(
    partial: Path, plan: dict, header: RecordHeader, chunks: list, batch_size: int, n: int
) -> int:
    """How many chunks a previous, interrupted recording of this shard left in `partial`
    (creating it, with the plan, if there is none). Its plan must be this one."""
    plan_file = partial / "plan.json"
    if not plan_file.is_file():
        with replacing(plan_file) as tmp:  # (creates `partial`)
            tmp.write_text(json.dumps(plan, sort_keys=True))
        return 0
    try:
        before = json.loads(plan_file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(
            f"{plan_file} is unreadable ({err}); delete {partial} to start over"
        ) from None
    if before != plan:
        old, new = _flat(before), _flat(plan)
        diff = [k for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
        raise ConfigError(
            f"{partial} is an interrupted recording with other settings (differs in: "
            f"{', '.join(diff) or 'format'}); rerun it as it was, or delete {partial} to start over"
        )
    dtype = row_dtype(header.num_params, len(header.class_names), header.feature_dim)
    done = 0
    while done < len(chunks) and (partial / _chunk_name(done)).is_file():
        try:
            rows = np.load(partial / _chunk_name(done), allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"{partial / _chunk_name(done)} is unreadable ({err}); "
                            f"delete {partial} to start over") from None  # fmt: skip
        if rows.dtype != dtype or len(rows) != _chunk_rows(chunks[done], batch_size, n):
            raise DataError(f"{partial / _chunk_name(done)} does not hold this recording's "
                            f"rows; delete {partial} to start over")  # fmt: skip
        done += 1
    return done


def _flat(plan: dict) -> dict:
    """A plan's settings and its header's fields as one dict, to name what differs."""
    header = plan.get("header")
    return {**(header if isinstance(header, dict) else {}),
            **{k: v for k, v in plan.items() if k != "header"}}  # fmt: skip
