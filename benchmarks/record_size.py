"""Size on disk of a record shard set against storing the augmented clouds themselves.

    python benchmarks/record_size.py runs/distill/records_k10 --num-points 1024

A record row holds (sample, copy, augmentation parameters, float16 logits[, feature]);
the alternative offline store keeps every augmented cloud: num_points x 3 coordinates
per copy, float32 as the models read them (float16 would halve it and lose the exact
replay). Prints one Markdown table row per store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py

from pcdistill.records.schema import RecordHeader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path, help="folder of record shards")
    parser.add_argument("--num-points", type=int, default=1024)
    args = parser.parse_args()
    files = sorted(args.records.glob("*.h5"))
    if not files:
        raise SystemExit(f"no record shards (*.h5) in {args.records}")
    size = sum(f.stat().st_size for f in files)
    rows, row_bytes = 0, 0
    for f in files:
        with h5py.File(f, "r") as h:
            header = RecordHeader.from_json(h.attrs["header"])
            rows += len(h["rows"])
            row_bytes = h["rows"].dtype.itemsize
    clouds = rows * args.num_points * 3 * 4
    print(f"records: {len(files)} shard(s), {header.num_samples:,} samples x K = "
          f"{header.copies} = {rows:,} copies, {len(header.class_names)} classes, "
          f"feature dim {header.feature_dim}")  # fmt: skip
    print("| store | bytes per copy | total on disk |")
    print("|---|---|---|")
    print(f"| records (row {row_bytes} B + HDF5 header) | {size / rows:.1f} | "
          f"{size / 2**20:,.1f} MiB |")  # fmt: skip
    print(f"| augmented clouds, float32 {args.num_points} x 3 | {clouds / rows:,.0f} | "
          f"{clouds / 2**20:,.1f} MiB ({clouds / size:,.0f}x the records) |")  # fmt: skip


if __name__ == "__main__":
    main()
