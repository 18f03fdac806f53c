"""Where a batch-1 forward's time goes: each CPU kernel against everything around them.

Every compiled kernel call (FPS, ball queries, the inference branches) goes through
`cpu_kernels.run_chunks`; this wraps it with a timer, runs eval-mode forwards of one
model under no_grad on real built-in test clouds, one at a time, and prints the mean
time per forward inside each kernel and the rest: Python, torch ops, conversions, the
head, and, in a model with branches wider than the kernels take (PointNet++ SSG x1),
those branches' torch matmuls too. For the tiny model that rest is glue that no kernel
speed-up removes, as the kernels are what no Python trimming removes. The wrapper
itself adds well under a microsecond a call.

    .venv/bin/python benchmarks/latency_parts.py [--model pointnet2_msg_w0.125.modelnet40]
        [--threads 1] [--forwards 400] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

from train_step import emit, header

HEADING = "## Batch-1 forward: time in the CPU kernels vs around them (issue 11)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pointnet2_msg_w0.125.modelnet40",
                        help="a shipped model's key, or a zoo name (random weights)")  # fmt: skip
    parser.add_argument("--width", type=float, default=1.0, help="zoo models only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--forwards", type=int, default=400)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()
    load_start = os.getloadavg()

    import torch

    import pcdistill.ops.cpu_kernels as kernels
    from pcdistill.data import builtin_dataset
    from pcdistill.engine.checkpoint import build_from_checkpoint
    from pcdistill.engine.device import tune_cpu_allocator
    from pcdistill.models import create_model, pretrained

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    if args.model in pretrained.manifest():  # a shipped key loads as a checkpoint does
        model, _ = build_from_checkpoint(args.model)
    else:
        model = create_model(args.model, width=args.width)
    model.eval()
    clouds = torch.from_numpy(builtin_dataset("test", num_points=1024).points[:16].copy())

    inside: collections.Counter[str] = collections.Counter()
    run_chunks = kernels.run_chunks

    def timed_run_chunks(kernel, *rest) -> None:
        t0 = time.perf_counter()
        run_chunks(kernel, *rest)
        inside[kernel.__name__] += time.perf_counter() - t0

    kernels.run_chunks = timed_run_chunks  # callers look it up at call time
    totals = []
    with torch.no_grad():
        for i in range(30):  # warm-up: compiled kernels loaded, folds cached
            model(clouds[i % 16 : i % 16 + 1])
        inside.clear()
        for i in range(args.forwards):
            t0 = time.perf_counter()
            model(clouds[i % 16 : i % 16 + 1])
            totals.append(time.perf_counter() - t0)
    kernels.run_chunks = run_chunks

    n = args.forwards
    forward = statistics.fmean(totals) * 1e3
    lines = [
        *header(HEADING, "latency_parts.py", args, "torch threads", load_start),
        f"- {args.model}, batch 1, eval forward under no_grad, {n} forwards over 16 built-in "
        "test clouds after 30 warm-up forwards; mean ms per forward.",
        "",
        "| part | ms per forward | share |",
        "| --- | ---: | ---: |",
    ]
    for name, seconds in inside.most_common():
        ms = seconds / n * 1e3
        lines.append(f"| kernel `{name}` | {ms:.3f} | {ms / forward:.0%} |")
    glue = forward - sum(inside.values()) / n * 1e3
    lines += [
        f"| everything else | {glue:.3f} | {glue / forward:.0%} |",
        f"| whole forward (median {statistics.median(totals) * 1e3:.3f}) | {forward:.3f} | 100% |",
        "",
    ]
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
