"""Data-parallel runs on torch.distributed, launched by torchrun.

`torchrun --nproc_per_node N -m pcdistill train ...` sets RANK / WORLD_SIZE /
LOCAL_RANK; the trainer joins the process group (gloo on CPU, nccl on CUDA) and
wraps the model in DistributedDataParallel. Every rank builds the same *global*
batch from (seed, epoch, step) — the same one a single process would train on —
and takes its contiguous slice of it, so the sample order is a per-epoch seeded
partition, like DistributedSampler's, and a run's result does not depend on how
many processes share it (up to BatchNorm, which `train.sync_bn` synchronises).

PyTorch's SyncBatchNorm runs on GPUs only; on the CPU `CPUSyncBatchNorm` reduces
the per-channel sums over the gloo group with a differentiable all-reduce.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pcdistill.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and summaries."""
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return World(dist.get_rank(), dist.get_world_size(), local)
    return World()


def init_from_env(device_type: str) -> World:
    """Join the process group torchrun describes in the environment; a no-op without one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world()


def check_divides(batch_size: int, w: World) -> None:
    if batch_size % w.size:
        raise ConfigError(
            f"train.batch_size={batch_size} (the global batch) is not divisible by the world "
            f"size {w.size}: every rank must take an equal slice"
        )


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (identity in a single process)."""
    if world().size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    w = world()
    if w.size == 1:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: list[nn.Parameter]) -> None:
    """Mean of the gradients over ranks, for parameters DDP does not own (e.g. a critic)."""
    w = world()
    if w.size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= w.size


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all-reduced gradient (each rank's loss
    depends on every rank's input through the shared statistics)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across ranks."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and world().size > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = x.new_tensor([x.numel() // x.shape[1]])
        stats = _SumOverRanks.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean  # biased, as BatchNorm normalises with
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(var.detach() * n / (n - 1), m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm synchronised across ranks: PyTorch's on GPUs, ours on the CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum,
                                    child.affine, child.track_running_stats)  # fmt: skip
            dtype = (child.weight if child.affine else child.running_mean).dtype
            sync.to(dtype).load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return model
