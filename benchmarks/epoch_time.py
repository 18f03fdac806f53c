"""Wall time of one training epoch, reference path vs fast path, one after the other.

Runs `pcdistill distill --config configs/distill/scratch.yaml` (the T3DNet tiny model
from scratch, one epoch of the full ModelNet40 training split minus the 10% hold-out,
then evaluation on the hold-out and the test split) once per path, each in its own
process, and reports the trainer's own training time (`elapsed` of the epoch event:
the steps, without evaluation), its samples/s, and the whole command's wall time.

    .venv/bin/python benchmarks/epoch_time.py [--threads 2] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_step import emit, header

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/distill/scratch.yaml"
PATHS = ["reference", "fast"]
HEADING = "## One epoch of `configs/distill/scratch.yaml`, reference vs fast path (issue 11)"


def run(path: str, out: Path, threads: int) -> dict:
    cmd = [sys.executable, "-m", "pcdistill", "distill", "--config", CONFIG, "--quiet",
           f"out={out}", f"train.threads={threads}"]  # fmt: skip
    env = {**os.environ, "PCDISTILL_MODEL_PATH": path}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epoch = [json.loads(line) for line in lines if '"event": "epoch"' in line][-1]
    return {"train_s": epoch["elapsed"], "samples_per_s": epoch["samples_per_s"],
            "wall_s": wall, "test_oa": epoch["test_oa"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()
    load_start = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in PATHS:
            results[path] = run(path, Path(tmp) / path, args.threads)
            print(path, results[path], flush=True)
    ref, fast = results["reference"], results["fast"]
    lines = [
        *header(HEADING, "epoch_time.py", args, "train.threads", load_start),
        "- One epoch of the T3DNet tiny model (PointNet++ MSG x1/8) from scratch on the full "
        "ModelNet40 training split less the 10% hold-out, batch 32, seed 0. Training time is "
        "the trainer's (steps only); wall time is the whole command (start-up, the epoch, "
        "evaluation on the hold-out and the test split).",
        "",
        "| path | training s | samples/s | command wall s | test OA |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for path, r in results.items():
        lines.append(
            f"| {path} | {r['train_s']:.0f} | {r['samples_per_s']:.1f} | {r['wall_s']:.0f} "
            f"| {r['test_oa']:.4f} |"
        )
    lines += [
        "",
        f"Training time {ref['train_s'] / fast['train_s']:.2f}x shorter on the fast path, "
        f"command wall time {ref['wall_s'] / fast['wall_s']:.2f}x. Load average at the end: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "",
    ]
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
