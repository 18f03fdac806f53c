"""Neighbour search: k nearest neighbours and PointNet++ ball query.

Distances come from `distance.square_distance`, so both backends compare the same
numbers: exact for coordinates, a matmul expansion for wide features.
"""

import torch
from torch import Tensor

from pcdistill.ops.backend import use_cpu_kernels
from pcdistill.ops.distance import EXACT_MAX_DIM, square_distance

# Exported ball queries this wide or wider are a compaction, narrower ones a top-k: the
# faster of the two in onnxruntime (1 thread, the tiny model's balls: k = 16 and 32 top-k
# 3.2 and 4.0 ms vs 5.9 and 6.4; k = 64 and 128 top-k 1.1 and 10.2 ms vs 1.0 and 7.4).
EXPORT_COMPACT_MIN_K = 64


def knn(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """Indices (B, M, k) of each query's (B, M, C) k nearest ref points (B, N, C), nearest first.

    Exactly equal distances are listed lower index first on the CPU kernels; torch.topk
    (the torch path) promises no order among them.
    """
    _check_pair(query, ref)
    if not 1 <= k <= ref.shape[1]:
        raise ValueError(f"k must be in [1, {ref.shape[1]}] for {ref.shape[1]} points, got {k}")
    if use_cpu_kernels(query, ref):
        from pcdistill.ops import cpu_kernels

        return cpu_kernels.knn(query, ref, k)
    with torch.no_grad():
        return square_distance(query, ref).topk(k, dim=-1, largest=False, sorted=True).indices


def ball_query(query: Tensor, ref: Tensor, radius: float, k: int) -> Tensor:
    """Indices (B, M, k) of the first k ref points (in index order) within radius of each query.

    Standard PointNet++ semantics: a point at distance exactly `radius` is inside, and
    empty slots repeat the first point found. A ball with no point at all (a query far
    from ref) gets index 0 everywhere, as the reference CUDA kernel leaves it.
    """
    _check_pair(query, ref)
    _check_ball(radius, k)
    if query.shape[-1] <= EXACT_MAX_DIM and use_cpu_kernels(query, ref):
        from pcdistill.ops import cpu_kernels

        return cpu_kernels.ball_query(query, ref, radius, k)
    with torch.no_grad():
        return _ball_query_torch(query, ref, radius, k)


def ball_queries(
    query: Tensor, ref: Tensor, radii: tuple[float, ...], ks: tuple[int, ...]
) -> list[Tensor]:
    """`ball_query` for several (radius, k) around the same queries (PointNet++ MSG).

    The same indices as one call per radius, from one distance computation for all radii.
    """
    _check_pair(query, ref)
    if len(radii) != len(ks):
        raise ValueError(f"{len(radii)} radii but {len(ks)} neighbour counts")
    for radius, k in zip(radii, ks, strict=True):
        _check_ball(radius, k)
    if query.shape[-1] <= EXACT_MAX_DIM and use_cpu_kernels(query, ref):
        from pcdistill.ops import cpu_kernels

        return cpu_kernels.ball_queries(query, ref, radii, ks)
    with torch.no_grad():  # one distance matrix for every radius
        return _balls_torch(square_distance(query, ref), radii, ks)


def _check_ball(radius: float, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")


def _ball_query_torch(query: Tensor, ref: Tensor, radius: float, k: int) -> Tensor:
    return _balls_torch(square_distance(query, ref), (radius,), (k,))[0]


def _balls_torch(d2: Tensor, radii: tuple[float, ...], ks: tuple[int, ...]) -> list[Tensor]:
    """Ball queries on squared distances (B, M, N), one per (radius, k). Under the ONNX
    tracer a query of k >= EXPORT_COMPACT_MIN_K is one placeholder node, which the
    exporter writes as a compaction in standard ops (`pcdistill.deploy.onnx_index_ops`):
    onnxruntime's top-k slows with k, the compaction does not."""
    tracing = torch.jit.is_tracing() and d2.dtype == torch.float32
    return [
        _BallQueryPlaceholder.apply(d2, r, k)
        if tracing and k >= EXPORT_COMPACT_MIN_K
        else _ball_by_keys(d2, r, k)
        for r, k in zip(radii, ks, strict=True)
    ]


def _ball_by_keys(d2: Tensor, radius: float, k: int) -> Tensor:
    """Key each point by its index inside the ball and by index + N outside; the k
    smallest keys are the answer.

    A top-k of k keys is cheaper than sorting all N (the classic implementation) and keeps
    shapes static. Keys are floats built by arithmetic (exact: below 2^24 in float32, else
    float64).
    """
    n = d2.shape[-1]
    dtype = torch.float32 if 2 * n < 2**24 else torch.float64
    order = torch.arange(n, device=d2.device, dtype=dtype)
    outside = torch.logical_not(d2 <= radius * radius)  # a NaN distance is outside
    key = outside.to(dtype) * n + order
    idx = key.topk(min(k, n), dim=-1, largest=False, sorted=True).values
    first = idx[..., :1]
    first = torch.where(first >= n, 0, first)  # empty ball
    idx = torch.where(idx >= n, first, idx).long()
    if k > n:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], k - n)], dim=-1)
    return idx


class _BallQueryPlaceholder(torch.autograd.Function):
    """A ball query that the ONNX exporter records as one `pcdistill::BallQuery` node."""

    @staticmethod
    def forward(ctx, d2: Tensor, radius: float, k: int) -> Tensor:
        return _ball_by_keys(d2, radius, k)

    @staticmethod
    def symbolic(g, d2, radius: float, k: int):
        # r2 as `_ball_by_keys` compares it: radius * radius, a float32 attribute
        out = g.op("pcdistill::BallQuery", d2, r2_f=radius * radius, k_i=k)
        sizes = d2.type().sizes() if d2.type().sizes() else [None, None]
        out.setType(d2.type().with_dtype(torch.long).with_sizes([sizes[0], sizes[1], k]))
        return out


def _check_pair(query: Tensor, ref: Tensor) -> None:
    if query.ndim != 3 or ref.ndim != 3:
        raise ValueError(
            f"query and ref must be (B, M, C) and (B, N, C), got "
            f"{tuple(query.shape)} and {tuple(ref.shape)}"
        )
    if query.shape[0] != ref.shape[0] or query.shape[2] != ref.shape[2]:
        raise ValueError(
            f"query {tuple(query.shape)} and ref {tuple(ref.shape)} differ in batch or channels"
        )
