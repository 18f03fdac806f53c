"""Point ops and a PointNet++ MSG training step: naive pure torch vs ours, in one run.

    python benchmarks/ops.py                       # print the table
    python benchmarks/ops.py --write BENCHMARKS.md # also put it in BENCHMARKS.md

Three columns per op on 32 real ModelNet40 clouds of 1024 points:
  naive  the classic pure-PyTorch code written below: python-loop FPS, full-sort ball
         query (pointnet2_pytorch's query_ball_point), cdist + topk kNN, fancy indexing;
  torch  our plain torch path (what runs on GPU and inside ONNX), forced on CPU;
  ours   what the package runs on CPU by default (backend "auto").
The model rows run the same model with every op swapped for the naive one.
Times are medians over repeats, in ms; "speed-up" is naive / ours.
"""

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import fpsample
import h5py
import numba
import numpy as np
import pykdtree.kdtree
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

import pcdistill.ops as ops
from pcdistill.models import create_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/modelnet40_hdf5_1024/ply_data_test0.h5"
SECTION = "## Point ops (issue 2)"


# ---- the naive reference: how a typical pure-PyTorch PointNet++ does it -------------------


def naive_farthest_point_sample(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """One batched step per sample on (B, N, 3), starting at index 0."""
    b, n, _ = xyz.shape
    centroids = torch.zeros(b, m, dtype=torch.long)
    distance = torch.full((b, n), 1e10)
    farthest = torch.zeros(b, dtype=torch.long)
    rows = torch.arange(b)
    for i in range(m):
        centroids[:, i] = farthest
        centroid = xyz[rows, farthest].view(b, 1, 3)
        distance = torch.min(distance, ((xyz - centroid) ** 2).sum(-1))
        farthest = distance.max(-1)[1]
    return centroids


def naive_square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    return (
        -2 * src @ dst.transpose(1, 2)
        + (src**2).sum(-1).unsqueeze(-1)
        + (dst**2).sum(-1).unsqueeze(1)
    )


def naive_ball_query(query: torch.Tensor, ref: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """Mark points outside with N, sort every row, keep the first k, pad with the first."""
    b, m, _ = query.shape
    n = ref.shape[1]
    group_idx = torch.arange(n).view(1, 1, n).repeat(b, m, 1)
    group_idx[naive_square_distance(query, ref) > radius**2] = n
    group_idx = group_idx.sort(dim=-1)[0][:, :, :k]
    group_first = group_idx[:, :, :1].repeat(1, 1, group_idx.shape[-1])
    mask = group_idx == n
    group_idx[mask] = group_first[mask]
    return group_idx


def naive_knn(query: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cdist(query, ref).topk(k, dim=-1, largest=False).indices


def naive_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(x.shape[0]).view(-1, *[1] * (idx.ndim - 1)).expand_as(idx)
    return x[rows, idx]


NAIVE = {
    "farthest_point_sample": naive_farthest_point_sample,
    "ball_query": naive_ball_query,
    "knn": naive_knn,
    "gather": naive_gather,
}


@contextlib.contextmanager
def naive_ops() -> Iterator[None]:
    """Swap our ops for the naive ones wherever a loaded pcdistill module imported them."""
    swapped = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("pcdistill.models"):
            continue
        for op, naive in NAIVE.items():
            if getattr(module, op, None) is getattr(ops, op):
                swapped.append((module, op))
                setattr(module, op, naive)
    try:
        yield
    finally:
        for module, op in swapped:
            setattr(module, op, getattr(ops, op))


# ---- timing ----------------------------------------------------------------------------


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: compile caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def progress(name: str, times: list[float]) -> tuple[str, list[float]]:
    """Show a finished row on stderr (model rows take minutes) and pass it on."""
    print(f"  {name}: {', '.join(f'{t:.1f}' for t in times)} ms", file=sys.stderr, flush=True)
    return name, times


def time_op(fast: Callable[[], object], naive: Callable[[], object], repeats: int) -> list[float]:
    """[naive, torch path, ours] in ms."""
    with ops.use_backend("torch"):
        plain = median_ms(fast, repeats)
    return [median_ms(naive, repeats), plain, median_ms(fast, repeats)]


def op_rows(xyz: torch.Tensor, repeats: int) -> list[tuple[str, list[float]]]:
    c1 = ops.gather(xyz, ops.farthest_point_sample(xyz, 512))
    c2 = ops.gather(c1, ops.farthest_point_sample(c1, 128))
    feats = torch.randn(*xyz.shape[:2], 64, generator=torch.Generator().manual_seed(0))
    cases = [
        ("FPS 1024 -> 512", "farthest_point_sample", (xyz, 512)),
        ("FPS 512 -> 128", "farthest_point_sample", (c1, 128)),
    ]
    for centres, ref, branches in [
        (c1, xyz, [(0.1, 16), (0.2, 32), (0.4, 128)]),
        (c2, c1, [(0.2, 32), (0.4, 64), (0.8, 128)]),
    ]:
        for r, k in branches:
            name = f"ball query {centres.shape[1]} of {ref.shape[1]}, r {r}, k {k}"
            cases.append((name, "ball_query", (centres, ref, r, k)))
    cases += [
        ("kNN 3-D, 1024 of 1024, k 20 (DGCNN)", "knn", (xyz, xyz, 20)),
        ("kNN 64-D, 1024 of 1024, k 20 (DGCNN)", "knn", (feats, feats, 20)),
        ("kNN 3-D, 512 of 1024, k 24 (PointMLP)", "knn", (c1, xyz, 24)),
    ]
    return [
        progress(name, time_op(partial(getattr(ops, op), *a), partial(NAIVE[op], *a), repeats))
        for name, op, a in cases
    ]


def alternative_rows(xyz: torch.Tensor, repeats: int) -> list[tuple[str, float, bool]]:
    """Wheels we measured before writing kernels: (name, ms, same indices as ours)."""
    clouds = xyz.numpy()
    threads = torch.get_num_threads()
    cases = [
        ("FPS 1024 -> 512, ours", lambda: ops.farthest_point_sample(xyz, 512).numpy()),
        (
            "FPS 1024 -> 512, fpsample.fps_sampling (exact), cloud by cloud",
            lambda: np.stack([fpsample.fps_sampling(c, 512, start_idx=0) for c in clouds]),
        ),
        (
            "FPS 1024 -> 512, fpsample.bucket_fps_kdline_sampling h=3 (QuickFPS)",
            lambda: np.stack([fpsample.bucket_fps_kdline_sampling(c, 512, 3, 0) for c in clouds]),
        ),
        ("kNN 3-D, 1024 of 1024, k 20, ours", lambda: ops.knn(xyz, xyz, 20).numpy()),
        (
            "kNN 3-D, 1024 of 1024, k 20, pykdtree, cloud by cloud",
            lambda: np.stack([pykdtree.kdtree.KDTree(c).query(c, k=20)[1] for c in clouds]),
        ),
        (
            f"kNN 3-D, 1024 of 1024, k 20, scipy cKDTree (workers={threads}), cloud by cloud",
            lambda: np.stack([cKDTree(c).query(c, k=20, workers=threads)[1] for c in clouds]),
        ),
    ]
    rows, reference = [], None
    for name, fn in cases:
        out = fn()
        if name.endswith("ours"):
            reference = out
        rows.append((name, median_ms(fn, repeats), bool(np.array_equal(out, reference))))
    return rows


def time_model(fn: Callable[[], object], repeats: int) -> list[float]:
    """[naive ops, torch path, ours] in ms for a callable that runs a model."""
    with naive_ops():
        naive = median_ms(fn, repeats)
    with ops.use_backend("torch"):
        plain = median_ms(fn, repeats)
    return [naive, plain, median_ms(fn, repeats)]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, xyz, labels) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(xyz), labels).backward()
    optimizer.step()


def infer(model: torch.nn.Module, xyz: torch.Tensor) -> None:
    with torch.no_grad():
        model(xyz)


def model_rows(xyz: torch.Tensor, repeats: int) -> list[tuple[str, list[float]]]:
    """Training steps (forward, CE, backward, Adam) and the tiny model's batch-1 inference."""
    labels = torch.arange(len(xyz)) % 40
    rows = []
    for width, label in [(1.0, "1"), (1 / 8, "1/8")]:
        torch.manual_seed(0)
        model = create_model("pointnet2_msg", num_classes=40, width=width).train()
        step = partial(train_step, model, torch.optim.Adam(model.parameters()), xyz, labels)
        name = f"PointNet++ MSG width {label}, train step"
        rows.append(progress(name, time_model(step, repeats)))
    one = partial(infer, model.eval(), xyz[:1])
    name = "PointNet++ MSG width 1/8, inference, batch 1"
    rows.append(progress(name, time_model(one, 5 * repeats)))
    return rows


# ---- report ----------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__} and our kernels "
        f"(numba {numba.__version__}) with {torch.get_num_threads()} threads; "
        f"load average at start {load}"
    )


def table(rows: list[tuple[str, list[float]]], batch: int) -> str:
    lines = [
        "| op (batch 32 unless stated) | naive ms | torch path ms | ours ms | speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (naive, plain, ours) in rows:
        lines.append(f"| {name} | {naive:.1f} | {plain:.1f} | {ours:.1f} | {naive / ours:.1f}x |")
    steps = [(n, t) for n, t in rows if "train step" in n]
    if steps:
        lines.append("")
        lines.append(
            "Training throughput (samples/s): "
            + "; ".join(
                f"{n.split(',')[0]}: naive {1e3 * batch / t[0]:.1f}, ours {1e3 * batch / t[2]:.1f}"
                for n, t in steps
            )
        )
    return "\n".join(lines)


def alternatives_table(rows: list[tuple[str, float, bool]]) -> str:
    lines = ["| alternative (batch 32) | ms | same indices as ours |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {ms:.1f} | {'yes' if same else 'no'} |" for name, ms, same in rows]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Put `section` under SECTION in path, replacing an older one and leaving the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ModelNet40 HDF5 file")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per op")
    parser.add_argument("--model-repeats", type=int, default=3, help="timed runs per model step")
    parser.add_argument("--skip-model", action="store_true", help="ops only")
    parser.add_argument("--threads", type=int, help="torch (and so our kernels') threads")
    parser.add_argument("--write", type=Path, help="put the results into this Markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with h5py.File(args.data) as f:
        xyz = torch.from_numpy(np.asarray(f["data"][:32], dtype=np.float32))
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else Path("python")
    command = shlex.join([str(python), "benchmarks/ops.py", *sys.argv[1:]])
    header = [
        f"Command: `{command}`",
        f"Machine: {machine()}",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"Data: first {len(xyz)} clouds of {args.data.name}, {xyz.shape[1]} points each",
    ]
    print("\n".join(header), flush=True)
    rows = op_rows(xyz, args.repeats)
    if not args.skip_model:
        rows += model_rows(xyz, args.model_repeats)
    alternatives = alternatives_table(alternative_rows(xyz, args.repeats))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    result = f"{table(rows, len(xyz))}\n\n{alternatives}\n\nLoad average at the end: {load}"
    print(result)
    if args.write:
        section = "\n\n".join([SECTION, "\n".join(f"- {h}" for h in header), result])
        write_section(args.write, section + "\n\n" + COLUMNS)
        print(f"wrote {args.write}")


COLUMNS = """\
Columns: *naive* is the classic pure-PyTorch code in `benchmarks/ops.py` (python-loop FPS,
full-sort ball query, cdist + topk kNN, fancy-index gather); *torch path* is our plain
torch implementation (the GPU/ONNX path) forced on CPU with `use_backend("torch")`;
*ours* is the default on CPU (numba kernels, `pcdistill.ops.cpu_kernels`). Model rows run
the same model with every op swapped for the naive one (train step = forward, cross-entropy,
backward, Adam step). The second table times the wheels we measured as candidates on
the same clouds and says whether they return our indices; pykdtree is not used although
it can be faster for 3-D kNN, because its bundled OpenMP runtime hangs a forked DataLoader
worker once the parent process has used it. Medians of repeated runs; the
machine is shared with other work, so the load average above matters."""


if __name__ == "__main__":
    main()
