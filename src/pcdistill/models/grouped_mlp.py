"""The fast path of a shared MLP over grouped neighbourhoods: first layer per point,
channels-first layout, fused CPU kernels.

A PointNet++ branch (and a DGCNN EdgeConv) gathers each group's neighbours, runs a
shared MLP (1x1 conv + BatchNorm + activation per layer) on every neighbour and
max-pools over the group. Two exact rewrites make it cheap:

1. The first layer is linear, so it is applied per point before grouping:
   W·[x_j - c; f_j] + b = (W·[x_j; f_j] + b) - W_xyz·c. The caller passes
   h = W·[x; f] + b per point (B, N, c1) and the per-group term (B, M, c1); the
   grouped tensor is only ever formed at the first layer's output width.
2. The rest runs on (channels, positions) so that every 1x1 conv is one matmul,
   BatchNorm reduces contiguous rows and the max runs over a contiguous axis.

`grouped_max` picks the implementation. For float CPU tensors with plain BatchNorm:
branches up to FUSED_MAX_WIDTH channels run the tiled numba kernels of
`pcdistill.ops.mlp_kernels` (training: batch statistics, forward and backward;
inference: BatchNorm folded into each layer and the whole chain run per tile in
cache); wider ones train on BLAS matmuls with BatchNorm + activation (+ the max) fused
between them (`pcdistill.models.norm_act`). Everywhere else the same rewrite runs in
plain torch: GPUs, autocast, SyncBatchNorm, tracing and ONNX export. The model's
own modules hold every parameter, so state dicts, `functional_call` (the T3DNet
supernet) and checkpoints are those of the reference path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from pcdistill.models.norm_act import batch_norm_terms, bn_act, update_running_stats
from pcdistill.ops.backend import building_graph, use_cpu_kernels
from pcdistill.ops.grouping import flat_index

TILE_POSITIONS = 512  # positions (neighbours) per kernel tile: keeps the chain in cache
EVAL_TILE_POSITIONS = 2048  # inference tiles: more groups, so the neighbour max runs on
# vectors of groups (`mlp_kernels.eval_branch`)
# The tiled kernels' loops reach 20-45 GFLOP/s on a core, below BLAS: wider branches are
# FLOP-bound and train faster on BLAS matmuls with `norm_act` between them (PointNet++ SSG
# x1, batch 32: 5.8 samples/s on the torch rewrite, 5.5 with every branch tiled), while the
# tiny model's 4-32-channel branches are faster tiled (30.6 samples/s, 27.7 on BLAS).
FUSED_MAX_WIDTH = 64


def layers_of(mlp: nn.Sequential) -> list[tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    """The (conv, BatchNorm) pairs of a `shared_mlp` (conv, norm, activation per layer).

    From a list: slicing an nn.Sequential builds a new Sequential each time (~50 us)."""
    modules = list(mlp)
    return list(zip(modules[0::3], modules[1::3], strict=True))


def negative_slope(mlp: nn.Sequential) -> float:
    act = mlp[2]
    return act.negative_slope if isinstance(act, nn.LeakyReLU) else 0.0


def first_layer(mlp: nn.Sequential) -> tuple[Tensor, Tensor | None]:
    """The first 1x1 conv as a matrix (c1, c_in) and its bias, to apply per point."""
    conv = mlp[0]
    return conv.weight.reshape(conv.out_channels, -1), conv.bias


def grouped_max(h: Tensor, centre: Tensor | None, idx: Tensor | None, mlp: nn.Sequential) -> Tensor:
    """max over each group of mlp applied to its neighbours, first layer given per point.

    h (B, N, c1) is the first conv applied per point (bias included); a group's first
    pre-activation is h[idx] - centre. idx (B, M, k) are neighbour indices; idx None is
    one group of all N points with no centre term (PointNet++'s global level).
    Returns (B, M, c_out) (M = 1 for idx None).
    """
    layers = layers_of(mlp)
    if not _kernels_apply(h, centre, layers):
        return _grouped_max_torch(h, centre, idx, mlp)
    training = all(bn.training for _, bn in layers)
    positions = h.shape[0] * (h.shape[1] if idx is None else idx.shape[1] * idx.shape[2])
    if idx is not None and centre is not None and _narrow(layers):
        if training and positions > 1:
            return _grouped_max_train_fused(h, centre, idx, mlp)
        if _inference_only(layers, lambda: _tensors(h, centre, mlp)):
            return _grouped_max_eval_fused(h, centre, idx, mlp)
    return _grouped_max_torch(h, centre, idx, mlp, norm_kernels=training and positions > 1)


def _kernels_apply(h: Tensor, centre: Tensor | None, layers) -> bool:
    """Whether the numba kernels can run this chain: float CPU tensors, plain BatchNorm."""
    return (
        use_cpu_kernels(h, *([centre] if centre is not None else []))
        and not torch.is_autocast_enabled("cpu")
        and all(
            type(bn) in (nn.BatchNorm2d, nn.BatchNorm1d) and bn.affine and bn.track_running_stats
            for _, bn in layers
        )
    )


def _inference_only(layers, tensors: Callable[[], Iterable[Tensor]]) -> bool:
    """No BatchNorm in training mode and no gradient wanted through `tensors()`: what the
    inference kernels need (they fold BatchNorm and have no backward). `tensors` is only
    called with autograd on: listing a module's parameters walks its submodules, ~76
    walks per tiny-model forward at batch 1."""
    return not any(bn.training for _, bn in layers) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors())
    )


def _narrow(layers) -> bool:
    return max(bn.num_features for _, bn in layers) <= FUSED_MAX_WIDTH


def _tensors(h: Tensor, centre: Tensor | None, mlp: nn.Sequential) -> list[Tensor]:
    return [h, *([centre] if centre is not None else []), *mlp.parameters()]


# --- plain torch (any device, traceable) -------------------------------------------


def _grouped_max_torch(
    h: Tensor,
    centre: Tensor | None,
    idx: Tensor | None,
    mlp: nn.Sequential,
    norm_kernels: bool = False,
) -> Tensor:
    """The rewrite in torch ops on a (1, C, groups, k) layout. Inference (no BatchNorm
    training) is `_grouped_max_folded`; a chain with some layers frozen folds those.

    norm_kernels (training on CPU): BatchNorm + activation (+ the max) between the
    matmuls run as the fused ops of `norm_act`.
    """
    layers = layers_of(mlp)
    if not any(bn.training or not bn.track_running_stats for _, bn in layers):
        return _grouped_max_folded(h, centre, idx, mlp)
    b, n, c1 = h.shape
    h_t = h.reshape(b * n, c1).t()
    if idx is None:
        m, k = 1, n
        z = h_t
    else:
        m, k = idx.shape[1], idx.shape[2]
        z = h_t.contiguous().index_select(1, flat_index(idx, n).reshape(-1))
        z = (z.view(c1, b * m, k) - centre.reshape(b * m, c1).t().unsqueeze(-1)).view(c1, -1)
    act = mlp[2]
    for i, (conv, bn) in enumerate(layers):
        if norm_kernels:  # the conv's bias goes into bn_act, which needs no broadcast copy
            bias = conv.bias if i > 0 else None
            z = z if i == 0 else conv.weight.reshape(conv.out_channels, -1) @ z
            k_max = k if i == len(layers) - 1 else 0
            z = bn_act(z, bn, negative_slope(mlp), k_max, bias)
            if k_max:
                return z.view(b, m, -1)
            continue
        if i > 0:
            w = conv.weight.reshape(conv.out_channels, -1)
            z = w @ z if conv.bias is None else torch.addmm(conv.bias.unsqueeze(1), w, z)
        if bn.training or not bn.track_running_stats:
            z = bn(z.view(1, -1, b * m, k)).view(z.shape[0], -1)
        else:  # folded: one multiply-add per value (a 1x1 conv's scale and shift)
            scale, shift = _bn_scale_shift(bn)
            z = torch.addcmul(shift.unsqueeze(1), z, scale.unsqueeze(1))
        z = act(z)
    return max_over_last(z.view(z.shape[0], b * m, k)).t().reshape(b, m, -1)


def _grouped_max_folded(
    h: Tensor, centre: Tensor | None, idx: Tensor | None, mlp: nn.Sequential
) -> Tensor:
    """Inference in torch ops (any device; what ONNX export traces): every BatchNorm
    folded into its conv, the first one into the per-point term before grouping, so
    each later layer is one matmul over the grouped tensor, and the last activation
    after the max (it is non-decreasing: act(max z) = max act(z)) on one value per
    group. Per layer that is two passes over the grouped tensor instead of four.
    Positions major, (positions, channels): a group gathers whole rows of channels.

    On one CPU thread, without autograd or a graph being built, the groups run in
    chunks whose widest activation is about CHUNK_BYTES, so each chunk's chain stays in
    cache instead of streaming full-size grouped tensors through memory (PointNet++ SSG
    x1 at batch 32: 1.39x). Not on more threads: there every small op pays a fork-join
    of torch's thread pool (chunked, batch 16 on 2 threads ran at 0.47x; BENCHMARKS.md)."""
    layers = layers_of(mlp)
    act = mlp[2]
    b, n, c1 = h.shape
    if torch.is_grad_enabled() or building_graph():  # folded from the parameters, traced
        scale, shift, later = _fold_chain(layers)
    else:  # repeated inference folds once (a batch-1 global level: ~25 small ops a call)
        scale, shift, later = _memo(mlp, "_chain_fold", _version_key(mlp),
                                    lambda: _fold_chain(layers))  # fmt: skip
    z = torch.addcmul(shift, h.reshape(b * n, c1), scale)
    if idx is None:  # one group of all N points per cloud, no centre term
        return _chain_max(z, None, None, later, act, n).reshape(b, 1, -1)
    m, k = idx.shape[1], idx.shape[2]
    rows = flat_index(idx, n).reshape(-1)
    centres = centre.reshape(b * m, 1, c1) * scale
    groups = b * m
    width = max(bn.num_features for _, bn in layers)
    step = max(1, CHUNK_BYTES // (z.element_size() * k * width))
    whole = step >= groups or z.device.type != "cpu" or torch.get_num_threads() > 1
    if whole or torch.is_grad_enabled() or building_graph():
        return _chain_max(z, rows, centres, later, act, k).reshape(b, m, -1)
    out = z.new_empty(groups, later[-1][0].shape[0] if later else c1)
    for lo in range(0, groups, step):
        hi = min(groups, lo + step)
        out[lo:hi] = _chain_max(z, rows[lo * k : hi * k], centres[lo:hi], later, act, k)
    return out.reshape(b, m, -1)


CHUNK_BYTES = 1 << 20  # a CPU inference chunk's widest activation: 1 MiB, within a core's L2


def _fold_chain(layers) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """The first BatchNorm as (scale, shift) and every later layer with its BatchNorm
    folded in, as `_grouped_max_folded` applies them."""
    scale, shift = _bn_scale_shift(layers[0][1])
    return scale, shift, [_folded_linear(conv, bn) for conv, bn in layers[1:]]


def _folded_linear(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """A 1x1 conv with the BatchNorm after it folded in: (W (c_out, c_in), bias)."""
    s, t = _bn_scale_shift(bn)
    w = conv.weight.reshape(conv.out_channels, -1) * s.unsqueeze(1)
    return w, t if conv.bias is None else conv.bias * s + t


def _chain_max(
    z: Tensor,
    rows: Tensor | None,
    centres: Tensor | None,
    later: list[tuple[Tensor, Tensor]],
    act: nn.Module,
    k: int,
) -> Tensor:
    """act(max over each group's k rows of the chain), (groups, c_out), from the first
    layer's folded per-point term z: each group's rows gathered and its centre term
    subtracted (rows None: z's rows are the groups', no centre), then the later layers.
    One function, so that each grouped tensor is freed as soon as the next is made."""
    if rows is not None:
        c1 = z.shape[1]
        z = (z.index_select(0, rows).view(-1, k, c1) - centres).view(-1, c1)
    for w, bias in later:
        z = torch.addmm(bias, act(z), w.t())
    return act(z.view(-1, k, z.shape[1]).amax(1))


def max_over_last(z: Tensor) -> Tensor:
    """z.amax(-1), with a cheaper backward when training.

    amax's backward splits the gradient among tied maxima through a full-size mask (three
    passes over the grouped tensor: 28% of a PointNet++ SSG x1 training step); max(dim)'s
    scatters it to one argmax per row, as the fused kernels do. The gradients agree: ties
    are duplicated neighbours (padded groups), whose shares sum to the same point.
    """
    return z.max(-1).values if torch.is_grad_enabled() and z.requires_grad else z.amax(-1)


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """BatchNorm in eval mode as y = x * scale + shift."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    return scale, shift


# --- fused CPU kernels -----------------------------------------------------------------


def _plan(m: int, k: int) -> int:
    """Groups per tile: a power of two dividing the groups per cloud, ~TILE_POSITIONS long."""
    gpt = 1
    while gpt * 2 * k <= TILE_POSITIONS and m % (gpt * 2) == 0:
        gpt *= 2
    return gpt


def _flat_idx(idx: Tensor, n: int) -> np.ndarray:
    flat = flat_index(idx, n).reshape(-1, idx.shape[2])
    return np.ascontiguousarray(flat.numpy())


def _grouped_max_eval_fused(h: Tensor, centre: Tensor, idx: Tensor, mlp: nn.Sequential) -> Tensor:
    b, n, c1 = h.shape
    m = idx.shape[1]
    scale, shift, *chain = _folded(mlp, h.dtype)
    with torch.no_grad():
        hf = (h * scale + shift).reshape(b * n, c1).t().contiguous().numpy()
        cf = (centre * scale).reshape(b * m, c1).t().contiguous().numpy()
    out = np.empty((b * m, chain[0][-1]), hf.dtype)
    _eval_branch(hf, cf, idx, n, chain, _slope(mlp, h), out)
    return torch.from_numpy(out).view(b, m, -1)


def _eval_branch(
    hf: np.ndarray, cf: np.ndarray, idx: Tensor, n: int, chain, slope, out: np.ndarray
) -> None:
    """`mlp_kernels.eval_branch` over every group: hf (c1, B*N) and cf (c1, B*M) are the
    first layer's folded per-point and per-group terms, chain (dims, weights, biases) the
    rest of the folded chain. Writes out (B*M, c_out), which may be a column slice."""
    from pcdistill.ops.cpu_kernels import run_chunks
    from pcdistill.ops.mlp_kernels import eval_branch

    b, m, k = idx.shape
    dims, weights, biases = chain
    gpt = max(1, min(b * m, EVAL_TILE_POSITIONS // k))
    run_chunks(eval_branch, -(-b * m // gpt), hf, cf, _np(idx.reshape(b * m, k)), m, n, gpt,
               dims, weights, biases, slope, out)  # fmt: skip


def level_eval_fused(
    points: Tensor, centroids: Tensor, idx: list[Tensor], mlps: nn.ModuleList
) -> Tensor | None:
    """Inference of all branches of a PointNet++ level on the kernels, or None where they
    do not take it (training, gradients wanted, a wide branch, not float CPU tensors).

    The same function as `grouped_max` per branch, with less work around the kernels at
    batch 1 (there it was ~2 ms of a ~8 ms forward): every branch's first layer is one
    matmul that writes the kernels' channels-first layout directly, then one multiply-add
    folds its BatchNorm, and everything folded is kept until a weight changes (`_folded`).
    points (B, N, 3 + C), centroids (B, M, 3), idx one (B, M, k) per branch -> (B, M, C').
    """
    layers = [layers_of(mlp) for mlp in mlps]
    if not (
        all(_kernels_apply(points, centroids, ls) and _narrow(ls) for ls in layers)
        and _inference_only(
            [pair for ls in layers for pair in ls], lambda: (points, centroids, *mlps.parameters())
        )
    ):
        return None
    w, bias, scale, shift, branches = _level_folded(mlps, points.dtype)
    b, n, c_in = points.shape
    m = centroids.shape[1]
    with torch.no_grad():  # rounded as `_grouped_max_folded` (the export) rounds it
        h = torch.addmm(bias.unsqueeze(1), w, points.reshape(b * n, c_in).t())
        hf = torch.addcmul(shift, h, scale).numpy()
        cf = ((w[:, :3] @ centroids.reshape(b * m, 3).t()) * scale).numpy()
    widths = [chain[0][-1] for _, _, chain, _ in branches]
    out = np.empty((b * m, sum(widths)), hf.dtype)  # each branch writes its own columns
    col = 0
    for (lo, hi, chain, slope), idx_i, width in zip(branches, idx, widths, strict=True):
        _eval_branch(hf[lo:hi], cf[lo:hi], idx_i, n, chain, slope, out[:, col : col + width])
        col += width
    return torch.from_numpy(out).view(b, m, -1)


def _level_folded(mlps: nn.ModuleList, dtype: torch.dtype) -> tuple:
    """A level's first layers stacked (W (c1, C_in), b), their BatchNorms' (scale, shift)
    as columns (c1, 1), and per branch its rows and the folded rest of its chain; cached
    as `_folded`."""
    key = (dtype, *(_version_key(mlp) for mlp in mlps))
    return _memo(mlps, "_folded_cache", key, lambda: _fold_level(mlps, dtype))


def _fold_level(mlps: nn.ModuleList, dtype: torch.dtype) -> tuple:
    parts: list[list[Tensor]] = [[], [], [], []]
    branches, lo = [], 0
    with torch.no_grad():
        for mlp in mlps:
            scale, shift, *chain = _folded(mlp, dtype)
            w, b = first_layer(mlp)
            b = torch.zeros_like(scale) if b is None else b.to(dtype)
            for part, t in zip(parts, (w.to(dtype), b, scale, shift), strict=True):
                part.append(t)
            branches.append((lo, lo + len(scale), chain, _slope(mlp, scale)))
            lo += len(scale)
        w, b, scale, shift = (torch.cat(part) for part in parts)
    return w, b, scale.unsqueeze(1), shift.unsqueeze(1), branches


def _memo(owner: nn.Module, slot: str, key: tuple, build: Callable[[], object]):
    """build(), kept on `owner` (not as a submodule, parameter or buffer) until `key`
    changes: keyed by `_version_key`, a fold is redone after any optimizer step,
    load_state_dict or `.data` swap."""
    cached = owner.__dict__.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    object.__setattr__(owner, slot, (key, value))
    return value


def _version_key(mlp: nn.Sequential) -> tuple:
    """Each tensor's storage and version: any in-place change or swap moves one of them.
    From each module's dicts: several times cheaper than mlp.parameters()."""
    return tuple(
        (t.data_ptr(), t._version)
        for module in mlp
        for tensors in (module._parameters, module._buffers)
        for t in tensors.values()
        if t is not None
    )


def _folded(mlp: nn.Sequential, dtype: torch.dtype) -> tuple:
    """The chain with BatchNorm folded in, as `eval_branch` takes it: the first layer's
    (scale, shift) and the rest's padded (dims, weights, biases). Folded once and kept on
    the module until any of its tensors changes (an optimizer step, load_state_dict, a
    `.data` swap: each moves the tensor's version counter or its storage), so repeated
    inference does not redo it per call."""
    key = (dtype, *_version_key(mlp))
    return _memo(mlp, "_folded_cache", key, lambda: _fold_for_kernels(mlp, dtype))


def _fold_for_kernels(mlp: nn.Sequential, dtype: torch.dtype) -> tuple:
    layers = layers_of(mlp)
    with torch.no_grad():
        scale, shift = (t.to(dtype) for t in _bn_scale_shift(layers[0][1]))
        dims = [layers[0][0].out_channels] + [conv.out_channels for conv, _ in layers[1:]]
        width = max(dims)
        weights = torch.zeros(len(layers) - 1, width, width, dtype=dtype)
        biases = torch.zeros(len(layers) - 1, width, dtype=dtype)
        for i, (conv, bn) in enumerate(layers[1:]):
            w, bias = _folded_linear(conv, bn)
            weights[i, : w.shape[0], : w.shape[1]] = w
            biases[i, : w.shape[0]] = bias
    return scale, shift, np.array(dims, np.int64), weights.numpy(), biases.numpy()


def _np_dtype(x: Tensor) -> type[np.floating]:
    return np.float32 if x.dtype == torch.float32 else np.float64


def _slope(mlp: nn.Sequential, x: Tensor):
    return _np_dtype(x)(negative_slope(mlp))


def _grouped_max_train_fused(h: Tensor, centre: Tensor, idx: Tensor, mlp: nn.Sequential) -> Tensor:
    b, n, c1 = h.shape
    m, k = idx.shape[1], idx.shape[2]
    layers = layers_of(mlp)
    params: list[Tensor] = []
    for i, (conv, bn) in enumerate(layers):
        if i > 0:
            bias = conv.bias if conv.bias is not None else h.new_zeros(conv.out_channels)
            params += [conv.weight.reshape(conv.out_channels, -1), bias]
        params += [bn.weight, bn.bias]
    plan = _TrainPlan(b, n, m, k, _flat_idx(idx, n), [bn.eps for _, bn in layers], _slope(mlp, h))
    out = _FusedTrain.apply(h.reshape(b * n, c1), centre.reshape(b * m, c1), plan, *params)
    for (_, bn), (mean, var) in zip(layers, plan.stats, strict=True):
        update_running_stats(bn, mean, var, plan.positions)
    return out.view(b, m, -1)


class _TrainPlan:
    """The non-tensor inputs of one fused call, and what forward leaves for backward."""

    def __init__(
        self, b: int, n: int, m: int, k: int, idx: np.ndarray, eps: list[float], slope: np.floating
    ) -> None:
        self.b, self.n, self.m, self.k, self.idx, self.eps, self.slope = b, n, m, k, idx, eps, slope
        self.gpt = _plan(m, k)
        self.tiles = -(-b * m // self.gpt)
        self.positions = b * m * k
        self.stats: list[tuple[np.ndarray, np.ndarray]] = []


class _FusedTrain(torch.autograd.Function):
    """Training forward (batch statistics) and backward of the chain, on the numba kernels.

    Inputs: h (B*N, c1), centre (B*M, c1), the plan, then per layer
    [gamma, beta] for the first and [W, b, gamma, beta] for each later one.
    """

    @staticmethod
    def forward(ctx, h: Tensor, centre: Tensor, plan: _TrainPlan, *params: Tensor) -> Tensor:  # type: ignore[override]
        from pcdistill.ops import mlp_kernels as mk
        from pcdistill.ops.cpu_kernels import run_chunks

        dtype = _np_dtype(h)
        hn, cn = _np(h), _np(centre)
        idx, k, gpt, tiles, count = plan.idx, plan.k, plan.gpt, plan.tiles, plan.positions
        gammas, betas, weights, biases = _split(params)
        dummy = np.empty((1, 1, 1), dtype)
        n_layers = len(gammas)
        norm = []  # per layer: mean, invstd, scale, shift (data dtype)
        zs: list[np.ndarray] = [dummy]  # z_1 .. z_{L-1}; z_1 is re-gathered, z_L recomputed
        for i in range(n_layers):
            c = gammas[i].shape[0]
            sums, squares = np.zeros((tiles, c)), np.zeros((tiles, c))
            if i == 0:
                run_chunks(mk.first_stats, tiles, hn, cn, idx, k, gpt, sums, squares)
            else:
                store = i < n_layers - 1
                z = np.empty((tiles, c, gpt * k), dtype) if store else dummy
                _, _, scale, shift = norm[-1]
                run_chunks(mk.forward_layer, tiles, i == 1, hn, cn, idx, k, gpt, zs[-1], scale,
                           shift, plan.slope, _np(weights[i - 1]), _np(biases[i - 1]), store, z,
                           sums, squares)  # fmt: skip
                if store:
                    zs.append(z)
            mean, var, invstd, scale, shift = batch_norm_terms(
                sums.sum(0), squares.sum(0), count, gammas[i], betas[i], plan.eps[i]
            )
            plan.stats.append((mean, var))
            norm.append(tuple(a.astype(dtype) for a in (mean, invstd, scale, shift)))
        out = np.empty((plan.b * plan.m, gammas[-1].shape[0]), dtype)
        arg = np.empty(out.shape, np.int64)
        zarg = np.empty(out.shape, dtype)
        recompute = n_layers > 1
        _, _, scale_p, shift_p = norm[-2] if recompute else norm[-1]
        w_last = _np(weights[-1]) if recompute else np.empty((0, 0), dtype)
        b_last = _np(biases[-1]) if recompute else np.empty(0, dtype)
        _, _, scale, shift = norm[-1]
        run_chunks(mk.forward_max, tiles, recompute, n_layers == 2, hn, cn, idx, k, gpt, zs[-1],
                   scale_p, shift_p, w_last, b_last, scale, shift, plan.slope, out, arg,
                   zarg)  # fmt: skip
        ctx.plan, ctx.state = plan, (hn, cn, zs, norm, arg, zarg)
        ctx.save_for_backward(*params)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        from pcdistill.ops import mlp_kernels as mk
        from pcdistill.ops.cpu_kernels import run_chunks

        plan = ctx.plan
        hn, cn, zs, norm, arg, zarg = ctx.state
        params = ctx.saved_tensors
        gammas, _, weights, biases = _split(params)
        idx, k, gpt, tiles, count = plan.idx, plan.k, plan.gpt, plan.tiles, plan.positions
        dtype = hn.dtype
        grad = _np(grad_out)
        n_layers = len(gammas)
        last = n_layers - 1
        sdy, sdyx = np.empty((tiles, gammas[-1].shape[0])), np.empty((tiles, gammas[-1].shape[0]))
        mean, invstd, scale, shift = norm[last]
        run_chunks(mk.last_sums, tiles, gpt, plan.b * plan.m, zarg, scale, shift, mean, invstd,
                   plan.slope, grad, sdy, sdyx)  # fmt: skip
        sdy, sdyx = sdy.sum(0), sdyx.sum(0)
        d_gamma = [None] * n_layers
        d_beta = [None] * n_layers
        d_w = [None] * (n_layers - 1)
        d_b = [None] * (n_layers - 1)
        dummy = np.empty((1, 1, 1), dtype)
        dystore = dummy
        for i in range(last, 0, -1):
            d_gamma[i], d_beta[i] = sdyx, sdy
            mean, invstd, scale, shift = norm[i]
            coef, mdy, mdyx = _bn_coefs(gammas[i], invstd, sdy, sdyx, count, dtype)
            mean_p, invstd_p, scale_p, shift_p = norm[i - 1]
            c_out, c_in = weights[i - 1].shape
            dyprev = np.empty((tiles, c_in, gpt * k), dtype)
            dw, db = np.empty((tiles, c_out, c_in)), np.empty((tiles, c_out))
            sdy_p, sdyx_p = np.empty((tiles, c_in)), np.empty((tiles, c_in))
            zstore = dummy if i == last else zs[i]
            run_chunks(mk.backward_layer, tiles, i == last, dystore, grad, arg, zarg, zstore,
                       mean, invstd, coef, mdy, mdyx, scale, shift, i == 1, hn, cn, idx, k,
                       gpt, zs[i - 1], scale_p, shift_p, mean_p, invstd_p, plan.slope,
                       _np(weights[i - 1]), _np(biases[i - 1]), dw, db, dyprev, sdy_p,
                       sdyx_p)  # fmt: skip
            d_w[i - 1], d_b[i - 1] = dw.sum(0), db.sum(0)
            sdy, sdyx = sdy_p.sum(0), sdyx_p.sum(0)
            dystore = dyprev
        d_gamma[0], d_beta[0] = sdyx, sdy
        mean, invstd, scale, shift = norm[0]
        coef, mdy, mdyx = _bn_coefs(gammas[0], invstd, sdy, sdyx, count, dtype)
        dh, dc = np.zeros(hn.shape), np.zeros(cn.shape)
        run_chunks(mk.backward_first, plan.b, last == 0, dystore, grad, arg, zarg, mean, invstd,
                   coef, mdy, mdyx, scale, shift, plan.slope, hn, cn, idx, k, gpt,
                   plan.m // gpt, dh, dc)  # fmt: skip
        ctx.state = None
        torch_dtype = grad_out.dtype
        grads: list[Tensor | None] = []
        for i in range(n_layers):
            if i > 0:
                grads += [d_w[i - 1], d_b[i - 1]]
            grads += [d_gamma[i], d_beta[i]]
        as_t = [torch.from_numpy(np.asarray(g)).to(torch_dtype) for g in grads]
        return (torch.from_numpy(dh).to(torch_dtype), torch.from_numpy(dc).to(torch_dtype), None,
                *as_t)  # fmt: skip


def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy())


def _split(params) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """[g0, b0, W1, b1, g1, be1, ...] -> gammas, betas, weights, biases."""
    gammas, betas, weights, biases = [params[0]], [params[1]], [], []
    for i in range(2, len(params), 4):
        weights.append(params[i])
        biases.append(params[i + 1])
        gammas.append(params[i + 2])
        betas.append(params[i + 3])
    return gammas, betas, weights, biases


def _bn_coefs(gamma: Tensor, invstd: np.ndarray, sdy, sdyx, count: int, dtype):
    """gamma * invstd, mean(dy), mean(dy * x_hat): BatchNorm backward's per-channel terms."""
    coef = _np(gamma).astype(np.float64) * invstd.astype(np.float64)
    return coef.astype(dtype), (sdy / count).astype(dtype), (sdyx / count).astype(dtype)
