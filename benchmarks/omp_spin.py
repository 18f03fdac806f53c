"""Our CPU kernels on 2 threads right after a torch op: libgomp's spinning workers vs not.

torch's OpenMP workers keep spinning for a while after each parallel op, on the cores
our kernels' helper threads want next. This times the tiny model's largest inference
branch (`eval_branch`, 512 groups x 128 neighbours, 8 -> 12 -> 16 channels) through
`run_chunks`, alone and right after a 2-thread torch matmul, at 1 and 2 threads, in a
fresh process per GOMP_SPINCOUNT setting (libgomp reads it once, when torch loads):
unset (libgomp's default) and 0 (what `import pcdistill` sets before torch loads).

    .venv/bin/python benchmarks/omp_spin.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

from train_step import cpu_model, emit

HEADING = "## Kernels after a torch op: libgomp spinning vs not (issue 11)"
TIMING = """
import statistics, sys, time
import numpy as np, torch
from pcdistill.ops import mlp_kernels as mk
from pcdistill.ops.cpu_kernels import run_chunks
rng = np.random.default_rng(0)
n, m, k, gpt = 1024, 512, 128, 16
h = rng.standard_normal((8, n)).astype(np.float32)
c = rng.standard_normal((8, m)).astype(np.float32)
idx = rng.integers(0, n, (m, k)).astype(np.int64)
dims = np.array([8, 12, 16])
w = rng.standard_normal((2, 16, 16)).astype(np.float32)
b = rng.standard_normal((2, 16)).astype(np.float32)
out = np.empty((m, 16), np.float32)
x, y = torch.randn(1024, 64), torch.randn(64, 64)
for threads in (1, 2):
    torch.set_num_threads(threads)
    for after_op in (False, True):
        def call():
            if after_op:
                torch.mm(x, y)
            run_chunks(mk.eval_branch, m // gpt, h, c, idx, m, n, gpt, dims, w, b,
                       np.float32(0), out)
        call()
        times = []
        for _ in range(60):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        print(threads, int(after_op), statistics.median(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()
    load_start = os.getloadavg()
    rows = []
    for spin in (None, "0"):
        env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
        if spin is not None:
            env["GOMP_SPINCOUNT"] = spin
        out = subprocess.run([sys.executable, "-c", TIMING], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        for line in out.split("\n"):
            if line.strip():
                threads, after_op, seconds = line.split()
                rows.append((spin or "unset", threads, after_op == "1", float(seconds)))
    lines = [
        HEADING,
        "",
        f"- Command: `.venv/bin/python benchmarks/omp_spin.py"
        f"{' --write ' + args.write if args.write else ''}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; load average at start "
        f"{', '.join(f'{v:.2f}' for v in load_start)}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "- `eval_branch` on the tiny model's largest branch via `run_chunks`, median of 60 "
        "calls; 'after a torch op': each call follows a 2-thread-capable 1024x64 @ 64x64 "
        "torch.mm (inside the timing).",
        "",
        "| GOMP_SPINCOUNT | threads | after a torch op | ms |",
        "| --- | ---: | --- | ---: |",
        *(f"| {s} | {t} | {'yes' if a else 'no'} | {sec * 1e3:.2f} |" for s, t, a, sec in rows),
        "",
    ]
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
