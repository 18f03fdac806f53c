"""Training-mode BatchNorm + activation (+ max over groups) as one autograd op on CPU.

The wide branches of the fast path (PointNet++ SSG x1, DGCNN x1: 64-1024 channels)
keep their 1x1 convolutions as BLAS matmuls on the channels-first (C, P) layout and
run what lies between them here, on the numba kernels of `pcdistill.ops.norm_kernels`:
`bn_act` is BatchNorm with batch statistics followed by a (leaky) ReLU, and with k > 0
the same followed by the max over each group of k consecutive positions. Both are
exactly the composition of `nn.BatchNorm` (training), the activation and amax, and
update the module's running statistics as `nn.BatchNorm` does; they exist because
that composition in PyTorch passes over the grouped tensor about ten times per
layer, forward and backward, and that traffic, not the matmuls, was most of the step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pcdistill.ops import norm_kernels as nk

BatchNorm = nn.modules.batchnorm._BatchNorm


def bn_act(
    z: Tensor, bn: BatchNorm, slope: float, k: int = 0, bias: Tensor | None = None
) -> Tensor:
    """act(BN(z + bias)) for z (C, P) with batch statistics, or with k > 0 its max over
    each group of k consecutive positions, (P // k, C); updates bn's running statistics.

    `bias` (C,) is the preceding conv's. Batch statistics cancel it in the output, so it
    only shifts the running mean and its true gradient is zero (the reference path holds
    rounding noise there). Taking it here instead of in `addmm` saves writing and
    re-reading the (C, P) output to broadcast it, and a pass to sum its gradient."""
    stats: list[np.ndarray] = []
    out = _BatchNormAct.apply(z, bias, bn.weight, bn.bias, bn.eps, slope, k, stats)
    mean, var = stats
    if bias is not None:
        mean = mean + bias.detach().numpy().astype(np.float64)
    update_running_stats(bn, mean, var, z.shape[1])
    return out


def batch_norm_terms(
    sums: np.ndarray, squares: np.ndarray, count: int, gamma: Tensor, beta: Tensor, eps: float
) -> tuple[np.ndarray, ...]:
    """From per-channel sums of x and x**2 over count values: mean, biased var, invstd and
    the scale / shift of y = x * scale + shift, all float64."""
    mean = sums / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    invstd = 1.0 / np.sqrt(var + eps)
    scale = gamma.detach().numpy().astype(np.float64) * invstd
    shift = beta.detach().numpy().astype(np.float64) - mean * scale
    return mean, var, invstd, scale, shift


def update_running_stats(bn: BatchNorm, mean: np.ndarray, var: np.ndarray, count: int) -> None:
    """What `nn.BatchNorm` does to its buffers in a training forward (var: biased)."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        dtype = bn.running_mean.dtype
        bn.running_mean.mul_(1 - factor).add_(torch.from_numpy(mean).to(dtype), alpha=factor)
        unbiased = torch.from_numpy(var * count / (count - 1)).to(dtype)
        bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


class _BatchNormAct(torch.autograd.Function):
    """act(BN(z + bias)) (k = 0) or its max over groups of k (k > 0); gradients for z,
    bias (None: no bias), gamma, beta."""

    @staticmethod
    def forward(ctx, z, bias, gamma, beta, eps, slope, k, stats_out):  # type: ignore[override]
        from pcdistill.ops.cpu_kernels import run_chunks

        zn = np.ascontiguousarray(z.detach().numpy())
        c, p = zn.shape
        dtype = zn.dtype.type
        sums, squares = np.empty(c), np.empty(c)
        run_chunks(nk.stats, c, zn, sums, squares)
        mean, var, invstd, scale, shift = batch_norm_terms(sums, squares, p, gamma, beta, eps)
        scale, shift, slope = scale.astype(dtype), shift.astype(dtype), dtype(slope)
        if k:
            out = np.empty((p // k, c), dtype)
            arg = np.empty((p // k, c), np.int64)
            run_chunks(nk.act_max, c, zn, k, scale, shift, slope, out, arg)
        else:
            out, arg = np.empty_like(zn), None
            run_chunks(nk.act, c, zn, scale, shift, slope, out)
        stats_out += [mean, var]
        ctx.state = (zn, arg, scale, shift, mean.astype(dtype), invstd, slope)
        ctx.save_for_backward(gamma)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        from pcdistill.ops.cpu_kernels import run_chunks

        zn, arg, scale, shift, mean, invstd, slope = ctx.state
        ctx.state = None
        (gamma,) = ctx.saved_tensors
        gn = gamma.detach().numpy()
        dy = np.ascontiguousarray(grad_out.numpy())
        c = zn.shape[0]
        dz, dgamma, dbeta = np.empty_like(zn), np.empty(c), np.empty(c)
        if arg is None:
            run_chunks(nk.act_backward, c, zn, dy, scale, shift, mean, invstd, gn, slope, dz,
                       dgamma, dbeta)  # fmt: skip
        else:
            run_chunks(nk.act_max_backward, c, zn, dy, arg, scale, shift, mean, invstd, gn,
                       slope, dz, dgamma, dbeta)  # fmt: skip
        dtype = grad_out.dtype
        return (
            torch.from_numpy(dz),
            grad_out.new_zeros(c) if ctx.needs_input_grad[1] else None,  # BN cancels the bias
            torch.from_numpy(dgamma).to(dtype),
            torch.from_numpy(dbeta).to(dtype),
            None, None, None, None,
        )  # fmt: skip
