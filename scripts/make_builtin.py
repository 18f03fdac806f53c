"""Cut the built-in dataset (src/pcdistill/data/builtin/) from the full ModelNet40 HDF5 set.

Per class, 8 train shapes from the train split and 3 test shapes from the test
split, picked with a fixed seed, written unchanged (1,024 float32 points) in the
official HDF5 layout so `builtin_dataset()` goes through the normal reader.
`provenance.json` names the source shard, row and mesh of every shape.

    python scripts/make_builtin.py [--source ../shared/data/modelnet40_hdf5_1024]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from pcdistill.data import BUILTIN_ROOT, read_modelnet_h5
from pcdistill.data.fileio import read_list

PER_CLASS = {"train": 8, "test": 3}
SEED = 0
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/modelnet40_hdf5_1024"


def source_rows(source: Path, split: str) -> list[dict]:
    """(shard, row, mesh) of every row of a split, in reader order (shard list order)."""
    rows = []
    for i, entry in enumerate(read_list(source / f"{split}_files.txt")):
        shard = Path(entry).name
        with h5py.File(source / shard, "r") as f:
            n = len(f["label"])
        id2file = source / f"ply_data_{split}_{i}_id2file.json"
        meshes = json.loads(id2file.read_text()) if id2file.is_file() else [None] * n
        rows += [{"file": shard, "row": r, "mesh": meshes[r]} for r in range(n)]
    return rows


def cut_split(source: Path, out: Path, split: str, rng: np.random.Generator) -> list[dict]:
    """Write ply_data_{split}0.h5 with PER_CLASS[split] shapes per class; return provenance."""
    full = read_modelnet_h5(source, split)
    picks = [
        rng.choice(np.flatnonzero(full.labels == c), PER_CLASS[split], replace=False)
        for c in range(full.num_classes)
    ]
    rows = np.sort(np.concatenate(picks))
    cut = full.subset(rows)
    with h5py.File(out / f"ply_data_{split}0.h5", "w") as f:
        f.create_dataset(
            "data", data=cut.points, chunks=cut.points.shape, compression="gzip",
            compression_opts=9, shuffle=True,
        )  # fmt: skip
        f.create_dataset("label", data=cut.labels.astype(np.uint8)[:, None])
    (out / f"{split}_files.txt").write_text(f"ply_data_{split}0.h5\n")
    origin = source_rows(source, split)
    return [origin[r] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=BUILTIN_ROOT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shape_names.txt").write_text((args.source / "shape_names.txt").read_text())
    rng = np.random.default_rng(SEED)
    provenance = {
        "source": args.source.name,
        "seed": SEED,
        "per_class": PER_CLASS,
        **{split: cut_split(args.source, args.out, split, rng) for split in PER_CLASS},
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
