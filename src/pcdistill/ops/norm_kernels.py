"""Fused CPU kernels (numba) for BatchNorm with batch statistics + activation, on
channels-first rows, optionally max-pooled over groups of k consecutive positions.

These serve the wide branches of the fast path (`pcdistill.models.norm_act`), where
the 1x1 convolutions are FLOP-bound and run faster as BLAS matmuls than in the tiled
kernels of `mlp_kernels`, but PyTorch's BatchNorm -> activation -> max chain still
streams the grouped tensor through memory many times: forward reads it for the
statistics, writes the normalised copy, then the activation; backward runs the
activation's backward, then BatchNorm's (two passes), and amax's backward builds a
full-size mask. Here forward is one read (statistics) and one read + write (the
activation, or a max per group that writes only the pooled values and argmax), and
backward is one pass for the per-channel sums and one that writes the gradient.

Layout: z (C, P), P = groups * k positions, contiguous per channel; every kernel
takes a channel range lo..hi (threads split channels, `cpu_kernels.run_chunks`).
The activation is a leaky ReLU, y -> max(y, slope * y) (slope 0: ReLU), with
derivative 1 where y > 0 and slope elsewhere, as torch's backward of both.
Statistics and the backward's sums accumulate in float64, as torch's CPU BatchNorm
does: in float32 they moved five float32
Adam steps of the tiny model up to 1.7e-3 off the float64 truth (tests/test_fast_path.py).
"""

import numpy as np

from pcdistill.ops.jit import fused_jit


@fused_jit
def stats(z, sums, squares, lo, hi):
    """sums[c], squares[c] = sum of z[c] and of z[c]**2 (float64), channels lo..hi-1."""
    p = z.shape[1]
    for c in range(lo, hi):
        row = z[c]
        s = 0.0
        q = 0.0
        for t in range(p):
            v = row[t]
            s += v
            q += v * v
        sums[c] = s
        squares[c] = q


@fused_jit
def act(z, scale, shift, slope, out, lo, hi):
    """out[c] = act(z[c] * scale[c] + shift[c]) for channels lo..hi-1."""
    for c in range(lo, hi):
        row, res = z[c], out[c]
        s, b = scale[c], shift[c]
        for t in range(z.shape[1]):
            y = row[t] * s + b
            res[t] = max(y, slope * y)


@fused_jit
def _coefs(gamma, invstd, sg, sgx, p, dgamma, dbeta, c, coefs):
    """Store the parameter gradients of channel c; return BatchNorm backward's terms
    gamma * invstd, mean(g) and mean(g * x_hat) * invstd, in the data's dtype."""
    dgamma[c] = sgx * invstd
    dbeta[c] = sg
    coefs[0] = gamma * invstd
    coefs[1] = sg / p
    coefs[2] = sgx * invstd * invstd / p
    return coefs[0], coefs[1], coefs[2]


@fused_jit
def act_backward(z, da, scale, shift, mean, invstd, gamma, slope, dz, dgamma, dbeta, lo, hi):
    """dz = BatchNorm's backward of g = da * act'(y), y = z * scale + shift, and the
    parameter gradients dgamma = sum(g * x_hat), dbeta = sum(g), channels lo..hi-1."""
    p = z.shape[1]
    coefs = np.empty(3, z.dtype)
    for c in range(lo, hi):
        row, drow, out = z[c], da[c], dz[c]
        s, b, m = scale[c], shift[c], mean[c]
        sg = 0.0
        sgx = 0.0
        for t in range(p):
            g = drow[t] if row[t] * s + b > 0 else drow[t] * slope
            sg += g
            sgx += g * (row[t] - m)
        coef, mg, mgx = _coefs(gamma[c], invstd[c], sg, sgx, p, dgamma, dbeta, c, coefs)
        for t in range(p):
            g = drow[t] if row[t] * s + b > 0 else drow[t] * slope
            out[t] = coef * (g - mg - (row[t] - m) * mgx)


@fused_jit
def act_max(z, k, scale, shift, slope, out, arg, lo, hi):
    """out[g, c] = max over group g's k positions of act(z[c] * scale[c] + shift[c]),
    arg[g, c] its position (the first on ties). The activation is non-decreasing, so
    the max is that of z where scale >= 0 and of -z where it is negative."""
    groups = out.shape[0]
    for c in range(lo, hi):
        row = z[c]
        s, b = scale[c], shift[c]
        sign = 1 if s >= 0 else -1
        for g in range(groups):
            best = g * k
            vbest = row[best] * sign
            for t in range(g * k + 1, (g + 1) * k):
                v = row[t] * sign
                if v > vbest:
                    vbest, best = v, t
            y = row[best] * s + b
            out[g, c] = max(y, slope * y)
            arg[g, c] = best


@fused_jit
def act_max_backward(
    z, dy, arg, scale, shift, mean, invstd, gamma, slope, dz, dgamma, dbeta, lo, hi
):
    """`act_backward` where da is dy (groups, C) at each group's argmax and 0 elsewhere:
    the sums run over groups, one pass writes dz and the argmax positions add their g."""
    p = z.shape[1]
    groups = dy.shape[0]
    coefs = np.empty(3, z.dtype)
    for c in range(lo, hi):
        row, out = z[c], dz[c]
        s, b, m = scale[c], shift[c], mean[c]
        sg = 0.0
        sgx = 0.0
        for g in range(groups):
            t = arg[g, c]
            gv = dy[g, c] if row[t] * s + b > 0 else dy[g, c] * slope
            sg += gv
            sgx += gv * (row[t] - m)
        coef, mg, mgx = _coefs(gamma[c], invstd[c], sg, sgx, p, dgamma, dbeta, c, coefs)
        for t in range(p):
            out[t] = coef * (-mg - (row[t] - m) * mgx)
        for g in range(groups):
            t = arg[g, c]
            gv = dy[g, c] if row[t] * s + b > 0 else dy[g, c] * slope
            out[t] += coef * gv
