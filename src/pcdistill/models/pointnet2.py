"""PointNet++ for classification, single-scale (SSG) and multi-scale (MSG) grouping.

Qi, Yi, Su, Guibas, "PointNet++: Deep Hierarchical Feature Learning on Point Sets in
a Metric Space", NeurIPS 2017 (arXiv 1706.02413).

Each set-abstraction level samples centroids by farthest point sampling, gathers up
to k neighbours within a radius of each (ball query), runs a shared MLP on every
neighbour's (relative xyz, features) and max-pools over the neighbourhood. MSG runs
several radii per level and concatenates their outputs. A last level groups all
points into one global feature, which a (512, 256) fully connected head with dropout
0.5 classifies.

The widths below are the paper's ModelNet40 configuration without normals. At 40
classes this is 1,475,688 parameters (SSG) and 1,747,368 (MSG); MSG at width 1/8 is
T3DNet's tiny model (Yang et al. 2024, arXiv 2402.19264), 30,184 parameters.
Optional per-point features (e.g. normals, `in_features=3`) enter the first level
beside the relative coordinates.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pcdistill.errors import ModelError
from pcdistill.models.grouped_mlp import first_layer, grouped_max, level_eval_fused
from pcdistill.models.layers import (
    PointClassifier,
    mlp_head,
    sample_centroids,
    scale_width,
    shared_mlp,
)
from pcdistill.models.paths import get_path
from pcdistill.models.registry import register_model
from pcdistill.ops import ball_queries, gather


@dataclass(frozen=True)
class Level:
    """One set-abstraction level; `npoint=None` groups all points into one (global) set."""

    npoint: int | None
    radii: tuple[float, ...]
    nsamples: tuple[int, ...]
    mlps: tuple[tuple[int, ...], ...]  # one shared MLP (output widths) per radius


SSG_LEVELS = (
    Level(512, (0.2,), (32,), ((64, 64, 128),)),
    Level(128, (0.4,), (64,), ((128, 128, 256),)),
    Level(None, (), (), ((256, 512, 1024),)),
)
MSG_LEVELS = (
    Level(512, (0.1, 0.2, 0.4), (16, 32, 128), ((32, 32, 64), (64, 64, 128), (64, 96, 128))),
    Level(128, (0.2, 0.4, 0.8), (32, 64, 128), ((64, 64, 128), (128, 128, 256), (128, 128, 256))),
    Level(None, (), (), ((256, 512, 1024),)),
)
HEAD_WIDTHS = (512, 256)
HEAD_DROPOUT = (0.5, 0.5)


class SetAbstraction(nn.Module):
    """A set-abstraction level: sample, group, shared MLP, max-pool (one branch per radius)."""

    def __init__(self, level: Level, in_features: int, width: float) -> None:
        super().__init__()
        self.level = level
        self.branches = nn.ModuleList(
            shared_mlp([3 + in_features] + [scale_width(c, width) for c in mlp], conv=nn.Conv2d)
            for mlp in level.mlps
        )
        self.out_features = sum(scale_width(mlp[-1], width) for mlp in level.mlps)

    def forward(
        self, xyz: Tensor, features: Tensor | None, fps_ordered: bool
    ) -> tuple[Tensor, Tensor]:
        """xyz (B, N, 3), features (B, N, C) or None -> centroids (B, M, 3), features (B, M, C')."""
        b, n, _ = xyz.shape
        if self.level.npoint is None:  # one set of all points, centred at the origin
            centroids = xyz.new_zeros(b, 1, 3)
            neighbourhoods = None
        else:
            centroids = gather(xyz, sample_centroids(xyz, self.level.npoint, fps_ordered))
            neighbourhoods = ball_queries(centroids, xyz, self.level.radii, self.level.nsamples)
        if get_path() == "fast":
            return centroids, self._branches_fast(xyz, features, centroids, neighbourhoods)
        if neighbourhoods is None:
            neighbourhoods = [torch.arange(n, device=xyz.device).expand(b, 1, n)]
        pooled = [
            mlp(self._group(xyz, features, idx, centroids)).amax(dim=-1)
            for mlp, idx in zip(self.branches, neighbourhoods, strict=True)
        ]
        return centroids, torch.cat(pooled, dim=1).transpose(1, 2)

    def _branches_fast(
        self, xyz: Tensor, features: Tensor | None, centroids: Tensor, idx: list[Tensor] | None
    ) -> Tensor:
        """The same function with every branch's first layer applied per point, before
        grouping (`grouped_mlp`): W·[x_j - c; f_j] + b = (W·[x_j; f_j] + b) - W_xyz·c."""
        points = xyz if features is None else torch.cat([xyz, features], dim=-1)
        if (
            idx is not None
            and (fused := level_eval_fused(points, centroids, idx, self.branches)) is not None
        ):
            return fused  # inference on the CPU kernels, every branch at once
        firsts = [first_layer(mlp) for mlp in self.branches]
        w = torch.cat([w for w, _ in firsts])  # all branches' first layers in one matmul
        h = F.linear(points, w, torch.cat([bias for _, bias in firsts]))
        centre = None if idx is None else F.linear(centroids, w[:, :3])
        widths = [w.shape[0] for w, _ in firsts]
        hs = h.split(widths, dim=-1)
        centres = [None] * len(widths) if centre is None else centre.split(widths, dim=-1)
        neighbourhoods = [None] * len(widths) if idx is None else idx
        pooled = [
            grouped_max(h_i, c_i, idx_i, mlp)
            for h_i, c_i, idx_i, mlp in zip(hs, centres, neighbourhoods, self.branches, strict=True)
        ]
        return torch.cat(pooled, dim=-1)

    @staticmethod
    def _group(xyz: Tensor, features: Tensor | None, idx: Tensor, centroids: Tensor) -> Tensor:
        """Neighbourhoods idx (B, M, k) as (B, 3 + C, M, k): xyz relative to centroid, features."""
        grouped = gather(xyz, idx) - centroids.unsqueeze(2)
        if features is not None:
            grouped = torch.cat([grouped, gather(features, idx)], dim=-1)
        return grouped.permute(0, 3, 1, 2)


class PointNet2(PointClassifier):
    """PointNet++ classifier: set-abstraction levels, then a fully connected head.

    `fps_ordered=True` declares that input clouds are stored in FPS order (see
    `pcdistill.ops.fps_order`), so every FPS becomes a prefix and costs nothing; the
    result is exactly that of `fps_ordered=False`. Levels after the first always take
    the prefix: their input, the previous level's centroids, is in FPS order. Uniform
    scaling, translation and rotation keep a cloud in FPS order, anisotropic (per-axis)
    scaling does not.
    """

    def __init__(
        self,
        levels: tuple[Level, ...],
        num_classes: int = 40,
        width: float = 1.0,
        in_features: int = 0,
        fps_ordered: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
            raise ModelError(f"in_features must be an integer >= 0, got {in_features!r}")
        if not isinstance(fps_ordered, bool):
            raise ModelError(f"fps_ordered must be True or False, got {fps_ordered!r}")
        self.in_channels = 3 + in_features
        self.min_points = levels[0].npoint or 1
        self.fps_ordered = fps_ordered

        self.levels = nn.ModuleList()
        features = in_features
        for level in levels:
            self.levels.append(SetAbstraction(level, features, width))
            features = self.levels[-1].out_features

        self.global_dim = self.levels[-1].out_features
        hidden = [scale_width(c, width) for c in HEAD_WIDTHS]
        self.head = mlp_head([self.global_dim, *hidden], num_classes, dropout=HEAD_DROPOUT)

    def forward_features(self, points: Tensor) -> dict[str, Tensor]:
        """Named features: "sa1", "sa2", ... (B, M, C) per level, and "global" (B, C)."""
        xyz = points[..., :3]
        features = points[..., 3:] if self.in_channels > 3 else None
        feats: dict[str, Tensor] = {}
        for i, level in enumerate(self.levels, start=1):
            # centroids come out of FPS in FPS order, so every later FPS is a prefix
            xyz, features = level(xyz, features, self.fps_ordered or i > 1)
            feats[f"sa{i}"] = features
        feats["global"] = feats.pop(f"sa{len(self.levels)}").squeeze(1)
        return feats


@register_model
def pointnet2_ssg(
    num_classes: int = 40, width: float = 1.0, in_features: int = 0, fps_ordered: bool = False
) -> PointNet2:
    """PointNet++ with single-scale grouping."""
    return PointNet2(SSG_LEVELS, num_classes, width, in_features, fps_ordered)


@register_model
def pointnet2_msg(
    num_classes: int = 40, width: float = 1.0, in_features: int = 0, fps_ordered: bool = False
) -> PointNet2:
    """PointNet++ with multi-scale grouping; at width 1/8, T3DNet's tiny model."""
    return PointNet2(MSG_LEVELS, num_classes, width, in_features, fps_ordered)
