"""Training-step (or inference) time of one model: a baseline checkout vs this one, alternated.

Each round runs one subprocess per source tree (the baseline under `--baseline-src`,
e.g. a `git worktree` of an older commit, then this checkout), each with its own numba
cache directory so neither loads the other's kernels; a first unrecorded round
compiles them. A subprocess times `--steps` Adam steps on real ModelNet40 training
shapes after one warm-up step and prints the median; with `--mode eval` it times
eval-mode forwards under no_grad instead (batch-1 latency: `--batch 1`), after five
warm-up calls. Alternating round by round lets machine noise hit both trees alike.

    .venv/bin/python benchmarks/train_step_ab.py --baseline-src /tmp/base/src --label X
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from train_step import DATA, emit, header

HEADINGS = {
    "train": "## Training step: {label} vs this code, alternated (issue 11)",
    "eval": "## Inference latency (batch {batch}, {threads} threads): {label} vs this code, "
    "alternated (issue 11)",
}
# pcdistill first, as the command line imports it: it tunes torch's OpenMP on import
STEP = """
import pcdistill
import statistics, sys, time, torch
from pcdistill.data import load_dataset
from pcdistill.engine.device import tune_cpu_allocator
from pcdistill.models import create_model
tune_cpu_allocator()
torch.set_num_threads(int(sys.argv[3]))
batch, steps = int(sys.argv[4]), int(sys.argv[5])
data = load_dataset(sys.argv[6], "train", num_points=1024).subset(range(batch))
x, y = torch.from_numpy(data.points), torch.from_numpy(data.labels).long()
torch.manual_seed(0)
model = create_model(sys.argv[1], num_classes=40, width=float(sys.argv[2]))
opt = torch.optim.Adam(model.parameters())
times = []
for _ in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    times.append(time.perf_counter() - t0)
print(statistics.median(times[1:]))
"""
FORWARD = """
import pcdistill
import statistics, sys, time, torch
from pcdistill.data import load_dataset
from pcdistill.engine.device import tune_cpu_allocator
from pcdistill.models import create_model
tune_cpu_allocator()  # as the command line, the trainer and `pcdistill profile` do
torch.set_num_threads(int(sys.argv[3]))
batch, steps = int(sys.argv[4]), int(sys.argv[5])
data = load_dataset(sys.argv[6], "train", num_points=1024).subset(range(batch))
x = torch.from_numpy(data.points)
torch.manual_seed(0)
model = create_model(sys.argv[1], num_classes=40, width=float(sys.argv[2])).eval()
times = []
with torch.no_grad():
    for i in range(steps + 5):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
print(statistics.median(times[5:]))
"""


def step_time(src: Path | None, cache: Path, args) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    snippet = STEP if args.mode == "train" else FORWARD
    cmd = [sys.executable, "-c", snippet, args.model, str(args.width), str(args.threads),
           str(args.batch), str(args.steps), str(DATA)]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", required=True, type=Path)
    parser.add_argument("--label", default="baseline", help="what the baseline is")
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--model", default="pointnet2_msg")
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()

    load_start = os.getloadavg()
    trees = {args.label: args.baseline_src, "this code": None}
    times: dict[str, list[float]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):
            for i, (name, src) in enumerate(trees.items()):
                t = step_time(src, Path(tmp) / str(i), args)
                if r:  # round 0 compiles the kernels into each tree's cache
                    times[name].append(t)
    lines = [
        *header(
            HEADINGS[args.mode].format(batch=args.batch, threads=args.threads, label=args.label),
            f"train_step_ab.py --baseline-src {args.baseline_src} --label '{args.label}' "
            f"--mode {args.mode} --model {args.model} --width {args.width} "
            f"--batch {args.batch} --steps {args.steps} --rounds {args.rounds}",
            args,
            "torch threads",
            load_start,
        ),
        f"- {args.model} x{args.width}, batch {args.batch}, "
        + (
            f"Adam; per round one process per tree, median of {args.steps} steps after a "
            "warm-up step"
            if args.mode == "train"
            else f"eval forward, no_grad; per round one process per tree, median of "
            f"{args.steps} calls after 5 warm-up calls"
        )
        + f"; {args.rounds} rounds after a compiling round.",
        "",
        f"| code | {'step' if args.mode == 'train' else 'forward'} ms per round | median ms |",
        "| --- | --- | ---: |",
    ]
    digits = 0 if args.mode == "train" else 2
    for name, ts in times.items():
        per_round = ", ".join(f"{t * 1e3:.{digits}f}" for t in ts)
        lines.append(f"| {name} | {per_round} | {statistics.median(ts) * 1e3:.{digits}f} |")
    base, new = (statistics.median(times[k]) for k in trees)
    what = "step" if args.mode == "train" else "forward"
    lines += ["", f"Median {what}: {base / new:.2f}x the speed of {args.label}.", ""]
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
