"""How big and how fast a model is on this machine.

FLOPs come from torch.utils.flop_counter, which counts matrix multiplies and
convolutions (2 FLOPs per multiply-add). It does not count elementwise work
(BatchNorm, ReLU, max-pooling), nor sampling and grouping (FPS, ball query,
kNN, gathers) — for point-cloud models those are often most of the time, which
is why latency is measured too. They are counted on the reference path, the
architecture as published: the fast path's fused kernels are invisible to the
counter, and its first-layer-per-point rewrite does fewer multiplies for the same
function, so the FLOP bound printed next to each latency stays the conventional one.

`profile_models` puts PyTorch eager, the ONNX export and its int8 version side by side
(`pcdistill profile`), each runtime timed in a fresh process of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, points: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward on `points` (reference path), divided by the batch size."""
    from pcdistill.models.paths import use_path

    model.eval()
    with FlopCounterMode(display=False) as counter, use_path("reference"):
        model(points)
    return counter.get_total_flops() // points.shape[0]


@torch.no_grad()
def measure_latency(
    model: nn.Module, points: torch.Tensor, repeats: int = 30, warmup: int = 5
) -> dict[str, float]:
    """Wall-clock ms of an eval-mode forward: median and p90 after warm-up."""
    model.eval()
    return time_call(lambda: model(points), repeats, warmup)


def time_call(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> dict[str, float]:
    """Wall-clock ms of fn(): median and p90 after `warmup` untimed calls, and torch's threads."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def matmul_gflops(threads: int = 1, size: int = 1024, repeats: int = 10) -> float:
    """This machine's float32 matmul throughput in GFLOP/s: a size x size torch.mm at
    `threads` threads, median of `repeats`. FLOPs divided by it is the time a model
    would take if it were nothing but large dense matmuls — a lower bound to compare
    latency with."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        ms = time_call(lambda: torch.mm(a, b), repeats, warmup=3)["median_ms"]
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / (ms * 1e-3) / 1e9


RUNTIMES = ("torch", "onnx", "int8")
BATCHES = (1, 32)


def _memory_kib(field: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS (resident now) or VmHWM (peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_memory() -> int | None:
    """Reset the peak (VmHWM) to the current resident memory and return it in KiB (Linux
    only; None elsewhere). Without the reset, importing numba's compiler leaves a peak
    that would hide a smaller inference one; sampling instead needs a thread whose GIL
    hand-offs slowed a niced run many times over."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _memory_kib("VmRSS")
    except OSError:
        return None


def _measure(
    runtime: str, path: str, points: np.ndarray, threads: int, repeats: int, batches: tuple
) -> dict:
    """Latency at each batch size and peak memory growth, in a fresh process (see profile)."""
    torch.set_num_threads(threads)
    if runtime == "torch":
        from pcdistill.deploy.export import run_torch
        from pcdistill.engine.device import tune_cpu_allocator

        tune_cpu_allocator()  # as the command line does in its own process
        from pcdistill.engine.checkpoint import build_from_checkpoint

        model, _ = build_from_checkpoint(path)
        run = partial(run_torch, model)
    else:
        from pcdistill.deploy.export import ort_session, run_onnx

        run = partial(run_onnx, ort_session(path, threads))
    before = _reset_peak_memory()
    out: dict = {}
    for b in batches:
        x = np.ascontiguousarray(points[:b])
        out[b] = time_call(lambda x=x, b=b: run(x, batch_size=b), repeats, warmup=2)
    out["peak_mb"] = float("nan") if before is None else (_memory_kib("VmHWM") - before) / 1024
    return out


def profile_models(
    sources: list[str],
    *,
    width: float = 1.0,
    num_points: int = 1024,
    threads: int = 1,
    repeats: int = 10,
    runtimes: tuple[str, ...] = RUNTIMES,
    batches: tuple[int, ...] = BATCHES,
) -> list[dict]:
    """One row per (model, runtime): params, FLOPs, file size, latency, throughput, memory.

    A source is a checkpoint (.pt) or a zoo name (random weights at `width`,
    `num_points` points). "onnx" is the parity-checked export, "int8" its dynamic
    quantization (see `quantize`). Each runtime is timed in its own fresh process, so
    "peak_mb" is its peak resident memory above what it held before the first batch
    (model loaded; Linux, NaN elsewhere), and allocator caches of one runtime never
    hide another's.
    Latency: median and p90 of `repeats` calls after 2 warm-up calls, `threads` threads,
    at each batch size in `batches`.
    """
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from pcdistill.data import builtin_dataset
    from pcdistill.deploy.export import export_onnx
    from pcdistill.deploy.quantize import quantize_onnx
    from pcdistill.engine.checkpoint import build_from_checkpoint
    from pcdistill.models import pretrained

    rows = []
    with tempfile.TemporaryDirectory(prefix="pcdistill-profile-") as tmp:
        for i, source in enumerate(sources):
            shipped = pretrained.manifest().get(source)
            if shipped is not None:  # its weights file is what it costs on disk
                files = {"torch": pretrained.WEIGHTS_DIR / shipped["file"]}
            elif source.endswith(".pt"):
                files = {"torch": Path(source)}
            else:
                files = {"torch": _zoo_checkpoint(Path(tmp) / f"{i}.pt", source, width, num_points)}
            load = source if shipped else str(files["torch"])  # what build_from_checkpoint takes
            model, ckpt = build_from_checkpoint(load)
            n = ckpt["config"]["data"]["num_points"]
            builtin = builtin_dataset("test", num_points=n)
            points = builtin.points[: max(batches)]  # timing: any real clouds will do
            if "onnx" in runtimes or "int8" in runtimes:
                files["onnx"] = Path(tmp) / f"{i}.onnx"
                # parity on the built-in shapes where the classes are ModelNet40's, else
                # on the checkpoint's own test split
                own = list(ckpt["class_names"]) != list(builtin.class_names)
                export_onnx(load, files["onnx"], data=None if own else "builtin",
                            samples=8)  # fmt: skip
            if "int8" in runtimes:
                files["int8"] = Path(tmp) / f"{i}_int8.onnx"
                quantize_onnx(files["onnx"], files["int8"], "dynamic", None)
            flops = count_flops(model, torch.from_numpy(points[:1]))
            for runtime in runtimes:
                with ProcessPoolExecutor(1, mp_context=_fresh_processes()) as pool:
                    path = load if runtime == "torch" else str(files[runtime])
                    job = (runtime, path, points, threads, repeats, batches)
                    timing = pool.submit(_measure, *job).result()
                rows.append({
                    "model": f"{ckpt['model']['name']} x{ckpt['model']['width']:g}",
                    "source": source, "runtime": runtime, "params": count_params(model),
                    "flops": flops, "file_bytes": files[runtime].stat().st_size,
                    "num_points": n, "threads": threads, **{
                        f"b{b}_{k}": timing[b][k] for b in batches for k in ("median_ms", "p90_ms")
                    },
                    "throughput": max(batches) / timing[max(batches)]["median_ms"] * 1e3,
                    "peak_mb": timing["peak_mb"],
                })  # fmt: skip
    return rows


def _fresh_processes():
    """Where each runtime is timed: a fresh process forked from a server that imported
    torch, onnxruntime and this package once (POSIX), so a row costs milliseconds to start
    instead of a 2-3 s interpreter start; a spawned interpreter where there is no fork.
    Nothing has run in the server, so each child starts as clean as a spawned one."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["onnxruntime", "pcdistill.deploy.export", __name__])
    return context


def _zoo_checkpoint(path: Path, name: str, width: float, num_points: int) -> Path:
    """A random-weight checkpoint of zoo model `name`, so it goes the checkpoint's way."""
    from pcdistill.data import builtin_dataset
    from pcdistill.engine.checkpoint import model_spec, save_model
    from pcdistill.engine.config import RunConfig
    from pcdistill.models import create_model

    cfg = RunConfig().model_dump(mode="json")
    cfg["data"]["num_points"] = num_points
    names = builtin_dataset("test").class_names
    model = create_model(name, num_classes=len(names), width=width)
    save_model(path, model, model_spec(name, len(names), width), list(names), "", cfg)
    return path
