"""How big and how fast a model is on this machine.

FLOPs come from torch.utils.flop_counter, which counts matrix multiplies and
convolutions (2 FLOPs per multiply-add). It does not count elementwise work
(BatchNorm, ReLU, max-pooling), nor sampling and grouping (FPS, ball query,
kNN, gathers) — for point-cloud models those are often most of the time, which
is why latency is measured too.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, points: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward on `points`, divided by the batch size."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(points)
    return counter.get_total_flops() // points.shape[0]


@torch.no_grad()
def measure_latency(
    model: nn.Module, points: torch.Tensor, repeats: int = 30, warmup: int = 5
) -> dict[str, float]:
    """Wall-clock ms of an eval-mode forward: median and p90 after warm-up."""
    model.eval()
    for _ in range(warmup):
        model(points)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(points)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "threads": torch.get_num_threads(),
    }
