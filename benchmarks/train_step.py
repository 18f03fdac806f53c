"""Training throughput of the PointNet++ models, side by side in one run.

Variants, each in its own subprocess (the allocator setting is process-wide):
  baseline  - glibc's default allocator, FPS computed every step
  alloc     - `tune_cpu_allocator()` (pcdistill.engine.device)
  alloc+fps - plus the geometry cache: clouds stored in FPS order, model fps_ordered=True
Clouds are real ModelNet40 training shapes (1,024 points), batch 32, Adam step.

    .venv/bin/python benchmarks/train_step.py [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "modelnet40_hdf5_1024"
MODELS = [("pointnet2_msg", 0.125), ("pointnet2_ssg", 1.0)]
VARIANTS = ["baseline", "alloc", "alloc+fps"]


def worker(name: str, width: float, variant: str, steps: int, batch: int) -> dict:
    """Runs inside the subprocess: time `steps` training steps after one warm-up step."""
    import torch

    from pcdistill.data import load_dataset
    from pcdistill.engine.device import tune_cpu_allocator
    from pcdistill.models import create_model

    if variant != "baseline":
        assert tune_cpu_allocator()
    fps = variant == "alloc+fps"
    data = load_dataset(DATA, "train", num_points=1024, fps_order=fps).subset(range(batch * 4))
    torch.manual_seed(0)
    model = create_model(name, width=width, fps_ordered=fps)
    opt = torch.optim.Adam(model.parameters())
    times = []
    for i in range(steps + 1):
        lo = (i % 4) * batch
        x = torch.from_numpy(data.points[lo : lo + batch])
        y = torch.from_numpy(data.labels[lo : lo + batch])
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    return {
        "step_ms": step * 1e3,
        "samples_per_s": batch / step,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    parser.add_argument(
        "--worker", nargs=3, metavar=("NAME", "WIDTH", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        name, width, variant = args.worker
        print(json.dumps(worker(name, float(width), variant, args.steps, args.batch)))
        return

    rows = []
    load_start = os.getloadavg()
    for name, width in MODELS:
        result = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--worker", name, str(width), variant]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result[variant] = json.loads(out.strip().splitlines()[-1])
            print(name, width, variant, result[variant], flush=True)
        rows.append((name, width, result))

    base = "baseline"
    write = f" --write {args.write}" if args.write else ""
    lines = [
        "## Training throughput: allocator tuning and geometry cache (issue 3)",
        "",
        f"- Command: `.venv/bin/python benchmarks/train_step.py{write}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"torch threads {rows[0][2][base]['threads']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in load_start)}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Real ModelNet40 training clouds, 1,024 points, batch {args.batch}, Adam; median of "
        f"{args.steps} steps after a warm-up step; each variant in its own process.",
        "",
        "| model | baseline samples/s | + allocator tuning | + geometry cache (FPS order) | "
        "total speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, width, r in rows:
        sps = [r[v]["samples_per_s"] for v in VARIANTS]
        lines.append(
            f"| {name} x{width:g} | {sps[0]:.1f} | {sps[1]:.1f} ({sps[1] / sps[0]:.2f}x) "
            f"| {sps[2]:.1f} ({sps[2] / sps[1]:.2f}x) | {sps[2] / sps[0]:.2f}x |"
        )
    load_end = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines += ["", f"Load average at the end: {load_end}", ""]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(Path(args.write), table)


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
