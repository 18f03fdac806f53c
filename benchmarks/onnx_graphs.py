"""onnxruntime latency of the tiny model's exported graph: a baseline checkout vs this one.

Both graphs come from the same random-weight checkpoint (PointNet++ MSG x1/8; sampling and
grouping, which dominate, do not depend on the weights), the baseline exported by the
code under `--baseline-src` (e.g. a `git worktree` of an older commit), this one by the
current code, each in its own process. Both are then timed in one process, alternating
round by round on the same real test clouds, so machine noise hits both alike.

    .venv/bin/python benchmarks/onnx_graphs.py --baseline-src /tmp/base/src [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from train_step import emit, header

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## The exported tiny model under onnxruntime: {label} vs this code (issue 11)"
EXPORT = """
import sys
from pathlib import Path
from pcdistill.deploy.export import export_onnx
from pcdistill.deploy.profile import _zoo_checkpoint
out = Path(sys.argv[1])
export_onnx(_zoo_checkpoint(out.with_suffix(".pt"), "pointnet2_msg", 0.125, 1024), out,
            data="builtin", samples=8)
"""


def export(src: Path | None, out: Path) -> None:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    subprocess.run([sys.executable, "-c", EXPORT, str(out)], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", required=True, type=Path)
    parser.add_argument("--label", default="baseline", help="what the baseline is")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()

    import onnxruntime as ort

    from pcdistill.data import builtin_dataset

    load_start = os.getloadavg()
    points = builtin_dataset("test", num_points=1024).points.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {args.label: Path(tmp) / "baseline.onnx", "this code": Path(tmp) / "new.onnx"}
        export(args.baseline_src, graphs[args.label])
        export(None, graphs["this code"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        sessions = {
            k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for k, p in graphs.items()
        }
        nodes = {k: _count_nodes(p) for k, p in graphs.items()}
        times: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            for name, s in sessions.items():
                for batch in (1, 32):
                    x = points[(r * batch) % 64 :][:batch]
                    feed = {s.get_inputs()[0].name: x}
                    s.run(None, feed)  # warm-up
                    for _ in range(args.repeats if batch == 1 else 2):
                        t0 = time.perf_counter()
                        s.run(None, feed)
                        times.setdefault((name, batch), []).append(time.perf_counter() - t0)
    lines = [
        *header(
            HEADING.format(label=args.label),
            f"onnx_graphs.py --baseline-src {args.baseline_src} --label '{args.label}'",
            args,
            "onnxruntime intra-op threads",
            load_start,
        ),
        f"- {args.rounds} alternating rounds; per round {args.repeats} batch-1 calls and 2 "
        "batch-32 calls after a warm-up call; min and median over all rounds.",
        "",
        "| graph | nodes (main graph + loop body) | batch 1 min / median ms "
        "| batch 32 min / median ms per sample |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in sessions:
        b1 = np.array(times[(name, 1)]) * 1e3
        b32 = np.array(times[(name, 32)]) * 1e3 / 32
        lines.append(f"| {name} | {nodes[name]} | {b1.min():.1f} / {np.median(b1):.1f} "
                     f"| {b32.min():.2f} / {np.median(b32):.2f} |")  # fmt: skip
    base, new = (np.median(times[(k, 1)]) for k in sessions)
    lines += ["", f"Batch-1 median: {base / new:.2f}x faster than {args.label}.", ""]
    emit("\n".join(lines), args.write)


def _count_nodes(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path)).graph
    body = sum(len(a.g.node) for n in graph.node if n.op_type == "Loop" for a in n.attribute
               if a.name == "body")  # fmt: skip
    return f"{len(graph.node)} + {body}"


if __name__ == "__main__":
    main()
