"""Training throughput and peak memory, reference path vs fast path, side by side in one run.

Rows: the T3DNet tiny model (PointNet++ MSG x1/8), PointNet++ SSG x1, DGCNN (x1 and
x1/8), PointMLP-elite, and T3DNet's network-augmentation step (the tiny model plus a
randomly widened 2x/3x sub-network of its supernet, `NetAugObjective`). Each row runs on
both paths, each in its own subprocess, so peak RSS is that step's own (the process's
maximum resident set: data, model, optimizer and the step's activations). Clouds are real
ModelNet40 training shapes (1,024 points), Adam, the CPU allocator tuning that the
trainer applies; median of `--steps` steps after one warm-up step.

    .venv/bin/python benchmarks/train_step.py [--threads 2] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "modelnet40_hdf5_1024"
ROWS = [
    ("pointnet2_msg", 0.125),
    ("pointnet2_ssg", 1.0),
    ("dgcnn", 1.0),
    ("dgcnn", 0.125),
    ("pointmlp_elite", 1.0),
    ("netaug", 0.125),
]
PATHS = ["reference", "fast"]


def worker(name: str, width: float, path: str, steps: int, batch: int, threads: int) -> dict:
    """Runs inside the subprocess: time `steps` training steps after one warm-up step."""
    import torch

    from pcdistill.data import load_dataset
    from pcdistill.distill.netaug import NetAugObjective, NetAugSuperNet
    from pcdistill.engine.device import tune_cpu_allocator
    from pcdistill.models import create_model
    from pcdistill.models.paths import set_path

    assert tune_cpu_allocator()
    torch.set_num_threads(threads)
    set_path(path)
    data = load_dataset(DATA, "train", num_points=1024).subset(range(batch * 4))
    torch.manual_seed(0)
    if name == "netaug":  # T3DNet stage 1 on the tiny model, widening on
        model = NetAugSuperNet("pointnet2_msg", 40, width, max_expand=3.0)
        objective = NetAugObjective((2.0, 3.0), widen_until=1.0)
        loss_of = lambda x, y: objective(model, SimpleNamespace(points=x, labels=y))[0]  # noqa: E731
    else:
        model = create_model(name, width=width)
        loss_of = lambda x, y: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    model.train()
    opt = torch.optim.Adam(model.parameters())
    times = []
    for i in range(steps + 1):
        lo = (i % 4) * batch
        x = torch.from_numpy(data.points[lo : lo + batch])
        y = torch.from_numpy(data.labels[lo : lo + batch])
        torch.manual_seed(i)
        t0 = time.perf_counter()
        loss = loss_of(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    return {
        "step_ms": step * 1e3,
        "samples_per_s": batch / step,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    parser.add_argument(
        "--worker", nargs=3, metavar=("NAME", "WIDTH", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        name, width, path = args.worker
        result = worker(name, float(width), path, args.steps, args.batch, args.threads)
        print(json.dumps(result))
        return

    rows = []
    load_start = os.getloadavg()
    for name, width in ROWS:
        if args.only and name not in args.only:
            continue
        result = {}
        for path in PATHS:
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--worker", name, str(width), path]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result[path] = json.loads(out.strip().splitlines()[-1])
            print(name, width, path, result[path], flush=True)
        rows.append((name, width, result))

    lines = [
        *header(
            "## Training step: reference path vs fast path (issue 11)",
            "train_step.py",
            args,
            "torch threads",
            load_start,
        ),
        f"- Real ModelNet40 training clouds, 1,024 points, batch {args.batch}, Adam; median of "
        f"{args.steps} steps after a warm-up step; each cell in its own process. Peak RSS is "
        "the process's maximum resident set (data, model, optimizer and the step).",
        "",
        "| model | reference samples/s | fast samples/s | speed-up | reference peak RSS MiB "
        "| fast peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, width, r in rows:
        ref, fast = r["reference"], r["fast"]
        label = "T3DNet netaug step (MSG x1/8 + 2x/3x sub-net)" if name == "netaug" else name
        lines.append(
            f"| {label} x{width:g} | {ref['samples_per_s']:.1f} | {fast['samples_per_s']:.1f} "
            f"| {fast['samples_per_s'] / ref['samples_per_s']:.2f}x "
            f"| {ref['peak_rss_mib']:,.0f} | {fast['peak_rss_mib']:,.0f} |"
        )
    load_end = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines += ["", f"Load average at the end: {load_end}", ""]
    emit("\n".join(lines), args.write)


def header(title: str, script: str, args, threads_label: str, load_start) -> list[str]:
    """A benchmark section's first lines: heading, exact command, machine, date."""
    flags = f" --threads {args.threads}" + (f" --write {args.write}" if args.write else "")
    return [
        title,
        "",
        f"- Command: `.venv/bin/python benchmarks/{script}{flags}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {threads_label} "
        f"{args.threads}; load average at start {', '.join(f'{v:.2f}' for v in load_start)}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]


def emit(section: str, write: str | None) -> None:
    """Print a section and, with --write, put it in that Markdown file."""
    print(section)
    if write:
        write_section(Path(write), section)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the section that starts with the same heading."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
