"""Fused CPU kernels (numba) for a shared MLP over grouped neighbourhoods, max-pooled.

The chain every PointNet++ branch and DGCNN EdgeConv runs, after the first linear
layer has been applied per point (`pcdistill.models.grouped_mlp` explains the
rewrite): for each group g (a centroid) and neighbour j,

    z1 = h[idx[g, j]] - c[g]                       (the first layer's pre-activation)
    a_l = act(BN_l(z_l)),  z_{l+1} = W_{l+1} a_l + b_{l+1}
    out[g] = max_j a_L

Why fused: with PyTorch ops each conv -> BatchNorm -> activation step streams the
grouped tensor (up to 134 MB per layer for the tiny model at batch 32) through
memory about ten times, forward and backward, and that traffic, not the FLOPs, is
the step time. Here the positions are processed in tiles of whole groups that stay
in cache: forward writes the pre-activations z_2 .. z_{L-1} once; z_1 is re-gathered
and z_L (the widest, read by the max and the last backward) recomputed from z_{L-1}
where needed, which costs one small matmul per tile and saves writing and twice
reading the largest tensor. Backward writes one gradient per layer, and the max keeps
its argmax (and z_L there) so the backward of the pooling touches one position per
group and channel.

Layout: a layer's values live tile-major, (tiles, channels, positions in the tile),
so every inner loop runs over contiguous positions and vectorises. A tile holds
`gpt` whole groups of k neighbours; tiles never straddle two clouds when gpt
divides the groups per cloud, which lets the first layer's backward scatter into
the per-point gradient one cloud per thread without races.

BatchNorm uses batch statistics (training): per-tile sums in float64, reduced by the
caller; the caller turns them into scale/shift and updates running statistics.
Reductions are compiled with reassociation allowed (so they vectorise): results are
deterministic on a machine but round differently from PyTorch's, at the 1e-16
relative level in float64 (tests/test_fast_path.py holds the two equal).
Threads: the `cpu_kernels` pool, chunks of tiles (or of clouds) per call.
"""

import numpy as np

from pcdistill.ops.jit import fused_jit


@fused_jit
def zero_of(v):
    """0 in v's dtype, to start a reduction. numba types `v * 0` (an integer) as float64,
    which turns a float32 reduction into a convert and a float64 add per element, 4x
    slower than the vectorised float32 loop."""
    return v * np.float32(0)


@fused_jit
def _gather(h, c, idx, k, g0, ng, buf):
    """buf[:, r*k + j] = h[idx[g0 + r, j]] - c[g0 + r]: the first layer's pre-activation."""
    for r in range(ng):
        grp = g0 + r
        for j in range(k):
            row = idx[grp, j]
            t = r * k + j
            for ch in range(h.shape[1]):
                buf[ch, t] = h[row, ch] - c[grp, ch]


@fused_jit
def _load_z(first, tile, g0, ng, k, h, c, idx, zstore, buf):
    """A tile's pre-activations: re-gathered for the first layer, else the stored ones."""
    if first:
        _gather(h, c, idx, k, g0, ng, buf)
        return buf
    return zstore[tile]


@fused_jit
def _activate(z, scale, shift, slope, a, n):
    """a = act(z * scale + shift) per channel row over the first n positions."""
    for ch in range(scale.shape[0]):
        _act_row(z[ch], scale[ch], shift[ch], slope, a[ch], n)


@fused_jit
def _act_row(z, s, b, slope, a, n):
    for t in range(n):
        y = z[t] * s + b
        a[t] = max(y, slope * y)


@fused_jit
def _leaky(x, slope, out, n):
    """out = max(x, slope * x) over the first n entries (ReLU for slope 0). Never in
    place: LLVM turns an in-place select into a conditional store, 5x slower."""
    for t in range(n):
        out[t] = max(x[t], slope * x[t])


@fused_jit
def _linear(w, b, a, out, n):
    """out = w @ a + b over the first n positions (vectorised over positions)."""
    for o in range(w.shape[0]):
        row = out[o]
        bo = b[o]
        for t in range(n):
            row[t] = bo
    _matmul_acc(w, a, out, n)


@fused_jit
def _matmul_acc(w, a, out, n):
    """out[o] += sum_i w[o, i] * a[i] over the first n positions, for every row o.

    Four outputs by eight inputs per pass over the positions (then by four, then one
    input at a time): each loaded a[i][t] feeds four outputs, and each output is loaded
    and stored once per eight inputs, so a pass does 32 multiply-adds per 12 loads and 4
    stores, where four by four did 16 per 8 loads and 4 stores (BENCHMARKS.md, "The
    inference kernel: matmul in 4 x 8 blocks, neighbour max in halves"). Each output adds
    its terms in `_matvec_row`'s order, so the two give bit-identical results
    (tests/test_fast_path.py)."""
    c_out, c_in = w.shape
    o = 0
    while o + 4 <= c_out:
        y0, y1, y2, y3 = out[o], out[o + 1], out[o + 2], out[o + 3]
        i = 0
        while i + 8 <= c_in:
            x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            x4, x5, x6, x7 = a[i + 4], a[i + 5], a[i + 6], a[i + 7]
            w00, w01, w02, w03 = w[o, i], w[o, i + 1], w[o, i + 2], w[o, i + 3]
            w04, w05, w06, w07 = w[o, i + 4], w[o, i + 5], w[o, i + 6], w[o, i + 7]
            w10, w11, w12, w13 = w[o + 1, i], w[o + 1, i + 1], w[o + 1, i + 2], w[o + 1, i + 3]
            w14, w15, w16, w17 = w[o + 1, i + 4], w[o + 1, i + 5], w[o + 1, i + 6], w[o + 1, i + 7]
            w20, w21, w22, w23 = w[o + 2, i], w[o + 2, i + 1], w[o + 2, i + 2], w[o + 2, i + 3]
            w24, w25, w26, w27 = w[o + 2, i + 4], w[o + 2, i + 5], w[o + 2, i + 6], w[o + 2, i + 7]
            w30, w31, w32, w33 = w[o + 3, i], w[o + 3, i + 1], w[o + 3, i + 2], w[o + 3, i + 3]
            w34, w35, w36, w37 = w[o + 3, i + 4], w[o + 3, i + 5], w[o + 3, i + 6], w[o + 3, i + 7]
            for t in range(n):
                v0, v1, v2, v3 = x0[t], x1[t], x2[t], x3[t]
                v4, v5, v6, v7 = x4[t], x5[t], x6[t], x7[t]
                y0[t] += ((w00 * v0 + w01 * v1) + (w02 * v2 + w03 * v3)) + (
                    (w04 * v4 + w05 * v5) + (w06 * v6 + w07 * v7))  # fmt: skip
                y1[t] += ((w10 * v0 + w11 * v1) + (w12 * v2 + w13 * v3)) + (
                    (w14 * v4 + w15 * v5) + (w16 * v6 + w17 * v7))  # fmt: skip
                y2[t] += ((w20 * v0 + w21 * v1) + (w22 * v2 + w23 * v3)) + (
                    (w24 * v4 + w25 * v5) + (w26 * v6 + w27 * v7))  # fmt: skip
                y3[t] += ((w30 * v0 + w31 * v1) + (w32 * v2 + w33 * v3)) + (
                    (w34 * v4 + w35 * v5) + (w36 * v6 + w37 * v7))  # fmt: skip
            i += 8
        if i + 4 <= c_in:
            x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            w00, w01, w02, w03 = w[o, i], w[o, i + 1], w[o, i + 2], w[o, i + 3]
            w10, w11, w12, w13 = w[o + 1, i], w[o + 1, i + 1], w[o + 1, i + 2], w[o + 1, i + 3]
            w20, w21, w22, w23 = w[o + 2, i], w[o + 2, i + 1], w[o + 2, i + 2], w[o + 2, i + 3]
            w30, w31, w32, w33 = w[o + 3, i], w[o + 3, i + 1], w[o + 3, i + 2], w[o + 3, i + 3]
            for t in range(n):
                v0, v1, v2, v3 = x0[t], x1[t], x2[t], x3[t]
                y0[t] += (w00 * v0 + w01 * v1) + (w02 * v2 + w03 * v3)
                y1[t] += (w10 * v0 + w11 * v1) + (w12 * v2 + w13 * v3)
                y2[t] += (w20 * v0 + w21 * v1) + (w22 * v2 + w23 * v3)
                y3[t] += (w30 * v0 + w31 * v1) + (w32 * v2 + w33 * v3)
            i += 4
        while i < c_in:
            for q in range(4):
                _axpy(w[o + q, i], a[i], out[o + q], n)
            i += 1
        o += 4
    while o < c_out:
        _matvec_row(w[o], a, out[o], n)
        o += 1


@fused_jit
def _matvec_row(coef, x, y, n):
    """y += sum_i coef[i] * x[i] over the first n entries, eight rows of x per pass over y
    (then four, then one), in `_matmul_acc`'s order (y is loaded and stored an eighth as
    often as with one axpy per row)."""
    i = 0
    while i + 8 <= coef.shape[0]:
        w0, w1, w2, w3 = coef[i], coef[i + 1], coef[i + 2], coef[i + 3]
        w4, w5, w6, w7 = coef[i + 4], coef[i + 5], coef[i + 6], coef[i + 7]
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        x4, x5, x6, x7 = x[i + 4], x[i + 5], x[i + 6], x[i + 7]
        for t in range(n):
            y[t] += ((w0 * x0[t] + w1 * x1[t]) + (w2 * x2[t] + w3 * x3[t])) + (
                (w4 * x4[t] + w5 * x5[t]) + (w6 * x6[t] + w7 * x7[t]))  # fmt: skip
        i += 8
    if i + 4 <= coef.shape[0]:
        w0, w1, w2, w3 = coef[i], coef[i + 1], coef[i + 2], coef[i + 3]
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for t in range(n):
            y[t] += (w0 * x0[t] + w1 * x1[t]) + (w2 * x2[t] + w3 * x3[t])
        i += 4
    while i < coef.shape[0]:
        _axpy(coef[i], x[i], y, n)
        i += 1


@fused_jit
def _dots_row(d, x, out, n):
    """out[i] = sum(d * x[i]) over the first n entries, four rows of x per pass over d."""
    i = 0
    while i + 4 <= out.shape[0]:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        s0 = zero_of(d[0])
        s1, s2, s3 = s0, s0, s0
        for t in range(n):
            v = d[t]
            s0 += v * x0[t]
            s1 += v * x1[t]
            s2 += v * x2[t]
            s3 += v * x3[t]
        out[i], out[i + 1], out[i + 2], out[i + 3] = s0, s1, s2, s3
        i += 4
    while i < out.shape[0]:
        out[i] = _dot(d, x[i], n)
        i += 1


@fused_jit
def _dots_block(dz, ap, dw, n):
    """dw[o, i] = sum(dz[o] * ap[i]) over the first n entries, for every o and i: two
    rows of dz by four of ap per pass (8 sums from 6 loads; 2.5-4x `_dots_row`)."""
    c_out, c_in = dz.shape[0], ap.shape[0]
    o = 0
    while o + 2 <= c_out:
        d0, d1 = dz[o], dz[o + 1]
        i = 0
        while i + 4 <= c_in:
            x0, x1, x2, x3 = ap[i], ap[i + 1], ap[i + 2], ap[i + 3]
            s00 = zero_of(d0[0])
            s01, s02, s03, s10, s11, s12, s13 = s00, s00, s00, s00, s00, s00, s00
            for t in range(n):
                u0, u1 = d0[t], d1[t]
                v0, v1, v2, v3 = x0[t], x1[t], x2[t], x3[t]
                s00 += u0 * v0
                s01 += u0 * v1
                s02 += u0 * v2
                s03 += u0 * v3
                s10 += u1 * v0
                s11 += u1 * v1
                s12 += u1 * v2
                s13 += u1 * v3
            dw[o, i], dw[o, i + 1], dw[o, i + 2], dw[o, i + 3] = s00, s01, s02, s03
            dw[o + 1, i], dw[o + 1, i + 1], dw[o + 1, i + 2], dw[o + 1, i + 3] = s10, s11, s12, s13
            i += 4
        while i < c_in:
            dw[o, i] = _dot(d0, ap[i], n)
            dw[o + 1, i] = _dot(d1, ap[i], n)
            i += 1
        o += 2
    if o < c_out:
        _dots_row(dz[o], ap, dw[o], n)


@fused_jit
def _dot(x, y, n):
    """sum(x * y) over the first n entries of two rows, in their own dtype: one vectorised
    reduction (a float64 accumulator would keep it scalar)."""
    s = zero_of(x[0])
    for t in range(n):
        s += x[t] * y[t]
    return s


@fused_jit
def _sum(x, n):
    """sum(x) over the first n entries, in x's dtype (vectorised, as `_dot`)."""
    s = zero_of(x[0])
    for t in range(n):
        s += x[t]
    return s


@fused_jit
def _axpy(alpha, x, y, n):
    """y += alpha * x over the first n entries."""
    for t in range(n):
        y[t] += alpha * x[t]


@fused_jit
def _row_stats(z, n, sums, squares):
    """BatchNorm's per-channel sums of z and z**2 over a tile, accumulated in float64: in
    float32 they moved five float32 Adam steps of the tiny model 1e-3 off the float64
    truth (3e-5 in float64; tests/test_fast_path.py)."""
    for ch in range(z.shape[0]):
        row = z[ch]
        s = 0.0
        q = 0.0
        for t in range(n):
            v = row[t]
            s += v
            q += v * v
        sums[ch] = s
        squares[ch] = q


@fused_jit
def _tile(tile, gpt, groups):
    """First group and group count of a tile."""
    return tile * gpt, min(gpt, groups - tile * gpt)


@fused_jit
def first_stats(h, c, idx, k, gpt, sums, squares, lo, hi):
    """Per-tile sums and sums of squares of the first layer's pre-activation."""
    buf = np.empty((h.shape[1], gpt * k), h.dtype)
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, idx.shape[0])
        _gather(h, c, idx, k, g0, ng, buf)
        _row_stats(buf, ng * k, sums[tile], squares[tile])


@fused_jit
def forward_layer(
    first, h, c, idx, k, gpt, zprev, scale, shift, slope, w, b, store, zout, sums, squares,
    lo, hi,
):  # fmt: skip
    """z_out = w @ act(BN(z_prev)) + b for tiles lo..hi-1, with its statistics; stored in
    zout only if `store` (the last layer's is recomputed where needed instead)."""
    t_len = gpt * k
    buf = np.empty((w.shape[1], t_len), h.dtype)
    a = np.empty((w.shape[1], t_len), h.dtype)
    scratch = np.empty((w.shape[0], t_len), h.dtype)
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, idx.shape[0])
        n = ng * k
        z = _load_z(first, tile, g0, ng, k, h, c, idx, zprev, buf)
        _activate(z, scale, shift, slope, a, n)
        out = zout[tile] if store else scratch
        _linear(w, b, a, out, n)
        _row_stats(out, n, sums[tile], squares[tile])


@fused_jit
def _last_z(recompute, first, tile, g0, ng, k, h, c, idx, zprev, scale_p, shift_p, slope,
            w, b, buf, a, out):  # fmt: skip
    """A tile's last pre-activation z_L: recomputed from the stored (or re-gathered)
    z_{L-1} as w @ act(BN(z_{L-1})) + b, or, for a one-layer chain, the gather itself."""
    n = ng * k
    if not recompute:
        _gather(h, c, idx, k, g0, ng, out)
        return out
    zp = _load_z(first, tile, g0, ng, k, h, c, idx, zprev, buf)
    _activate(zp, scale_p, shift_p, slope, a, n)
    _linear(w, b, a, out, n)
    return out


@fused_jit
def forward_max(recompute, first, h, c, idx, k, gpt, zprev, scale_p, shift_p, w, b, scale,
                shift, slope, out, arg, zarg, lo, hi):  # fmt: skip
    """out[g] = max_j act(BN(z_L)), its first argmax j and z_L there (zarg), for the groups
    of tiles lo..hi-1; z_L comes from `_last_z`."""
    t_len = gpt * k
    c_last = scale.shape[0]
    buf = np.empty((max(w.shape[1], 1), t_len), h.dtype)
    a = np.empty((max(w.shape[1], 1), t_len), h.dtype)
    zl = np.empty((c_last, t_len), h.dtype)
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, idx.shape[0])
        z = _last_z(recompute, first, tile, g0, ng, k, h, c, idx, zprev, scale_p, shift_p,
                    slope, w, b, buf, a, zl)  # fmt: skip
        for r in range(ng):
            for ch in range(c_last):
                s, bb = scale[ch], shift[ch]
                best = -np.inf
                best_j = 0
                for j in range(k):
                    y = z[ch, r * k + j] * s + bb
                    v = max(y, slope * y)
                    if v > best:
                        best = v
                        best_j = j
                out[g0 + r, ch] = best
                arg[g0 + r, ch] = best_j
                zarg[g0 + r, ch] = z[ch, r * k + best_j]


@fused_jit
def last_sums(gpt, groups, zarg, scale, shift, mean, invstd, slope, grad, sdy, sdyx, lo, hi):
    """Per-tile sums over positions of the last BatchNorm's output gradient dy and of
    dy * x_hat, for tiles lo..hi-1.

    dy is non-zero only at each group's argmax, where forward_max kept z (zarg), so this
    reads one value per group and channel instead of the whole tile.
    """
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, groups)
        for ch in range(scale.shape[0]):
            s1 = 0.0
            s2 = 0.0
            for r in range(ng):
                g = g0 + r
                z = zarg[g, ch]
                y = z * scale[ch] + shift[ch]
                d = grad[g, ch] if y > 0 else grad[g, ch] * slope
                s1 += d
                s2 += d * ((z - mean[ch]) * invstd[ch])
            sdy[tile, ch] = s1
            sdyx[tile, ch] = s2


@fused_jit
def _load_dy(last, tile, g0, ng, k, dystore, grad, arg, zarg, scale, shift, slope, buf):
    """A tile's gradient at the BatchNorm output: scattered from the max for the last layer
    (the activation's derivative from z at the argmax, zarg), else the stored one."""
    if not last:
        return dystore[tile]
    n = ng * k
    for ch in range(buf.shape[0]):
        row = buf[ch]
        for t in range(n):
            row[t] = 0
    for r in range(ng):
        g = g0 + r
        for ch in range(buf.shape[0]):
            y = zarg[g, ch] * scale[ch] + shift[ch]
            d = grad[g, ch]
            buf[ch, r * k + arg[g, ch]] = d if y > 0 else d * slope
    return buf


@fused_jit
def _bn_backward(z, dy, mean, invstd, coef, mdy, mdyx, dz, n):
    """dz = gamma * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), batch statistics."""
    for ch in range(mean.shape[0]):
        _bn_backward_row(z[ch], dy[ch], mean[ch], invstd[ch] * mdyx[ch], coef[ch], mdy[ch],
                         dz[ch], n)  # fmt: skip


@fused_jit
def _bn_backward_row(z, dy, m, s_m2, a, m1, dz, n):
    for t in range(n):
        dz[t] = a * (dy[t] - m1 - (z[t] - m) * s_m2)


@fused_jit
def backward_layer(
    last, dystore, grad, arg, zarg, zstore, mean, invstd, coef, mdy, mdyx, scale, shift,
    first, h, c, idx, k, gpt, zprev, scale_p, shift_p, mean_p, invstd_p, slope, w, b,
    dw, db, dyprev, sdy, sdyx, lo, hi,
):  # fmt: skip
    """One layer l >= 2 backward over tiles lo..hi-1.

    From the gradient dy_l at BN_l's output: dz_l, then per-tile partial dW_l and db_l,
    da_{l-1} = W_l^T dz_l, dy_{l-1} = da_{l-1} * act'(y_{l-1}) (stored), and the per-tile
    sums of dy_{l-1} and dy_{l-1} * x_hat_{l-1} that BN_{l-1}'s backward needs. For the
    last layer z_l is recomputed from z_{l-1} (w, b) instead of read from memory.
    """
    c_out, c_in = w.shape
    t_len = gpt * k
    dy_buf = np.empty((c_out, t_len), h.dtype)
    dz = np.empty((c_out, t_len), h.dtype)
    zl = np.empty((c_out, t_len), h.dtype)
    zp_buf = np.empty((c_in, t_len), h.dtype)
    ap = np.empty((c_in, t_len), h.dtype)
    da = np.empty((c_in, t_len), h.dtype)
    wt = np.ascontiguousarray(w.T)
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, idx.shape[0])
        n = ng * k
        zp = _load_z(first, tile, g0, ng, k, h, c, idx, zprev, zp_buf)
        _activate(zp, scale_p, shift_p, slope, ap, n)
        if last:
            _linear(w, b, ap, zl, n)
            z = zl
        else:
            z = zstore[tile]
        dy = _load_dy(last, tile, g0, ng, k, dystore, grad, arg, zarg, scale, shift, slope,
                      dy_buf)  # fmt: skip
        _bn_backward(z, dy, mean, invstd, coef, mdy, mdyx, dz, n)
        for o in range(c_out):
            db[tile, o] = _sum(dz[o], n)
        _dots_block(dz, ap, dw[tile], n)
        for i in range(c_in):
            row = da[i]
            for t in range(n):
                row[t] = 0
        _matmul_acc(wt, dz, da, n)
        out = dyprev[tile]
        for i in range(c_in):
            sdy[tile, i], sdyx[tile, i] = _act_backward_row(
                da[i], zp[i], scale_p[i], shift_p[i], mean_p[i], invstd_p[i], slope, out[i], n
            )


@fused_jit
def _act_backward_row(da, z, scale, shift, mean, invstd, slope, out, n):
    """out = da * act'(z * scale + shift); returns sum(out) and sum(out * x_hat)."""
    s1 = 0.0  # float64, as `_row_stats`: BatchNorm backward's mean terms are subtracted
    s2 = 0.0
    for t in range(n):
        zv = z[t]
        d = da[t] if zv * scale + shift > 0 else da[t] * slope
        out[t] = d
        s1 += d
        s2 += d * (zv - mean)
    return s1, s2 * invstd


@fused_jit
def backward_first(
    last, dystore, grad, arg, zarg, mean, invstd, coef, mdy, mdyx, scale, shift, slope,
    h, c, idx, k, gpt, tiles_per_cloud, dh, dc, lo, hi,
):  # fmt: skip
    """First layer backward for clouds lo..hi-1: dz_1, scattered into dh (per point) and
    dc (per group, with a minus sign). A cloud's tiles touch only its own rows of dh."""
    c1 = h.shape[1]
    t_len = gpt * k
    z = np.empty((c1, t_len), h.dtype)
    dy_buf = np.empty((c1, t_len), h.dtype)
    dz = np.empty((c1, t_len), h.dtype)
    n_tiles = (idx.shape[0] + gpt - 1) // gpt
    for cloud in range(lo, hi):
        for tile in range(cloud * tiles_per_cloud, min(n_tiles, (cloud + 1) * tiles_per_cloud)):
            g0, ng = _tile(tile, gpt, idx.shape[0])
            n = ng * k
            _gather(h, c, idx, k, g0, ng, z)
            dy = _load_dy(last, tile, g0, ng, k, dystore, grad, arg, zarg, scale, shift, slope,
                          dy_buf)  # fmt: skip
            _bn_backward(z, dy, mean, invstd, coef, mdy, mdyx, dz, n)
            for r in range(ng):
                grp = g0 + r
                for j in range(k):
                    row = idx[grp, j]
                    t = r * k + j
                    for ch in range(c1):
                        v = dz[ch, t]
                        dh[row, ch] += v
                        dc[grp, ch] -= v


@fused_jit
def eval_branch(h_t, c_t, idx, m, n_points, gpt, dims, weights, biases, slope, out, lo, hi):
    """Inference with BatchNorm folded into each layer: the whole chain per tile, in cache.

    h_t (c1, points) and c_t (c1, groups) are the first layer's folded per-point and
    per-group terms, channels first (y_1 = h[idx] - c), for clouds of n_points points
    and m groups each; idx (groups, k) indexes each group's own cloud. Layer l >= 1 is
    weights[l-1][:dims[l], :dims[l-1]], biases[l-1][:dims[l]]. Nothing but `out`
    (groups, dims[-1]) is written to memory.

    A tile's positions are neighbour-major (position j * ng + r is neighbour j of the
    tile's group r), unlike the training kernels' group-major tiles: the max over each
    group's k neighbours is then an elementwise max of k contiguous ng-long vectors,
    which vectorises, where a per-group max reduction stays scalar (numba's float max
    does not vectorise as a reduction); `_neighbour_max` takes them in halves, so its
    loops run over many groups' neighbours at once.
    """
    k = idx.shape[1]
    t_len = gpt * k
    width = max(weights.shape[1], h_t.shape[0])
    z = np.empty((width, t_len), h_t.dtype)  # pre-activations
    a = np.empty((width, t_len), h_t.dtype)  # activations
    rows = np.empty(t_len, np.int64)
    halves = np.empty((2, (k + 1) // 2 * gpt), h_t.dtype)
    n_layers = dims.shape[0]
    last = dims[n_layers - 1]
    for tile in range(lo, hi):
        g0, ng = _tile(tile, gpt, idx.shape[0])
        n = ng * k
        for r in range(ng):
            offset = (g0 + r) // m * n_points
            for j in range(k):
                rows[j * ng + r] = idx[g0 + r, j] + offset
        for ch in range(h_t.shape[0]):
            hr, cr, zr = h_t[ch], c_t[ch, g0 : g0 + ng], z[ch]
            for j in range(k):
                for r in range(ng):
                    zr[j * ng + r] = hr[rows[j * ng + r]] - cr[r]
        for layer in range(1, n_layers):
            for ch in range(dims[layer - 1]):
                _leaky(z[ch], slope, a[ch], n)
            _linear(weights[layer - 1, : dims[layer], : dims[layer - 1]],
                    biases[layer - 1], a, z, n)  # fmt: skip
        for ch in range(last):  # the activation is non-decreasing: act(max z) = max act(z)
            best = _neighbour_max(z[ch], k, ng, halves)
            for r in range(ng):
                v = best[r]
                out[g0 + r, ch] = max(v, slope * v)


@fused_jit
def _neighbour_max(row, k, ng, halves):
    """max_j row[j * ng + r] for each r < ng, as a view into halves (2, >= (k + 1) // 2 * ng).

    Halving steps: the first half of the remaining rows against the last half (the middle
    row of an odd count carried over), each one long elementwise max over every group at
    once, out of place, in the two buffers in turn. One pass per neighbour ran a short
    ng-long loop per row, whose setup cost more than its maxes (BENCHMARKS.md, "The
    inference kernel: matmul in 4 x 8 blocks, neighbour max in halves"); an in-place
    running max compiles to a conditional store and stays scalar (see `_leaky`)."""
    src = row
    rows = k
    turn = 0
    while rows > 1:
        pairs = rows // 2
        keep = rows - pairs  # rows left: the pairs' maxes and the odd middle row
        dst = halves[turn]
        _max_of_two(src, src[keep * ng :], dst, pairs * ng)
        for t in range(pairs * ng, keep * ng):  # the middle row (odd count only)
            dst[t] = src[t]
        src, rows, turn = dst, keep, 1 - turn
    return src[:ng]


@fused_jit
def _max_of_two(x, y, out, n):
    """out = max(x, y) elementwise over the first n entries."""
    for t in range(n):
        out[t] = max(x[t], y[t])
