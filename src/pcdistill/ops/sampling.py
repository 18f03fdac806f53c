"""Farthest point sampling (FPS), always starting from index 0.

Greedy FPS from a fixed first point has the prefix property (DESIGN.md): FPS to m
points of the first M >= m FPS points gives the first m FPS points of the whole
cloud. Both backends keep it exactly, ties included: a pick depends only on
squared distances between picked and candidate points, computed identically
whatever the rest of the cloud is, and ties go to the lower index, which in a
cloud stored in FPS order is the earlier FPS point.
Uniform scaling, translation and rotation keep the order in exact arithmetic; in
float32 their rounding can swap two points whose distances agree to ~1e-6
relative. Anisotropic (per-axis) scaling changes the distances and so the order.
"""

import torch
from torch import Tensor

from pcdistill.ops.backend import use_cpu_kernels


def farthest_point_sample(xyz: Tensor, m: int) -> Tensor:
    """Indices (B, m) int64 of m farthest points of xyz (B, N, 3), starting at index 0."""
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must have shape (B, N, 3), got {tuple(xyz.shape)}")
    if not 0 <= m <= xyz.shape[1]:
        raise ValueError(f"cannot sample {m} points from clouds of {xyz.shape[1]}")
    if use_cpu_kernels(xyz):
        from pcdistill.ops import cpu_kernels

        return cpu_kernels.farthest_point_sample(xyz, m)
    with torch.no_grad():
        return _farthest_point_sample_torch(xyz, m)


def fps_order(xyz: Tensor) -> Tensor:
    """Permutation (B, N) that puts every cloud in full FPS order.

    Store a cloud as xyz[order] once and every later FPS to m points is its first m.
    """
    return farthest_point_sample(xyz, xyz.shape[1])


def _farthest_point_sample_torch(xyz: Tensor, m: int) -> Tensor:
    """Plain torch FPS: one batched step per sample, so it runs on any device.

    Points are laid out (B, 3, N) so each step reads contiguous memory. Under the ONNX
    tracer FPS is one placeholder node instead of m unrolled steps, which the exporter
    replaces by a hand-written Loop (`pcdistill.deploy.onnx_index_ops`).
    """
    if torch.jit.is_tracing():
        return _FPSPlaceholder.apply(xyz, m)
    return _fps_loop(xyz.transpose(1, 2).contiguous(), m)


def _fps_loop(points: Tensor, m: int) -> Tensor:
    """FPS indices (B, m) of points (B, 3, N); the sum over the 3 coordinates runs in
    coordinate order, the arithmetic of `square_distance`."""
    b, c, n = points.shape[0], points.shape[1], points.shape[2]
    idx = torch.zeros(b, m, dtype=torch.long, device=points.device)
    nearest = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    last = torch.zeros(b, 1, 1, dtype=torch.long, device=points.device)
    for i in range(1, m):
        picked = points.gather(2, last.expand(b, c, 1))  # (B, 3, 1)
        nearest = torch.minimum(nearest, (points - picked).square_().sum(1))
        last = nearest.argmax(-1).view(b, 1, 1)  # first maximum: ties go to the lower index
        idx[:, i] = last.view(b)
    return idx


class _FPSPlaceholder(torch.autograd.Function):
    """FPS that the ONNX exporter records as one `pcdistill::FarthestPointSample` node."""

    @staticmethod
    def forward(ctx, xyz: Tensor, m: int) -> Tensor:
        return _fps_loop(xyz.transpose(1, 2).contiguous(), m)

    @staticmethod
    def symbolic(g, xyz, m: int):
        out = g.op("pcdistill::FarthestPointSample", xyz, m_i=m)
        sizes = xyz.type().sizes() if xyz.type().sizes() else [None]
        out.setType(xyz.type().with_dtype(torch.long).with_sizes([sizes[0], m]))
        return out
