"""PointMLP and PointMLP-elite for classification.

Ma, Qin, You, Ran, Fu, "Rethinking Network Design and Local Geometry in Point Cloud:
A Simple Residual MLP Framework", ICLR 2022 (arXiv 2202.07123).

A per-point embedding is followed by four stages. Each stage keeps half of the points
as anchors (farthest point sampling), groups the k = 24 nearest neighbours of every
anchor in xyz, normalises their features with the geometric affine module, then runs
residual MLP blocks on every neighbour (Φ_pre), max-pools over the neighbours, and
runs more residual blocks on every anchor (Φ_pos). A max-pool over the last anchors
is the global feature. The configurations are the authors' ModelNet40 models:

- PointMLP: embedding 64, stage widths (128, 256, 512, 1024), 2 + 2 blocks per stage.
- PointMLP-elite: embedding 32, stage widths (64, 128, 256, 256), residual blocks
  narrowed to a quarter of the stage width, (1, 1, 2, 1) blocks before and after.

Geometric affine divides each neighbour's offset from its anchor by one standard
deviation. The authors' code takes it over the whole batch, which makes a cloud's
logits depend on its batch mates even in eval mode; here it is taken per cloud (no
change in parameters, and the same result for a batch of one).
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pcdistill.errors import ModelError
from pcdistill.models.layers import (
    PointClassifier,
    mlp_head,
    sample_centroids,
    scale_width,
    shared_mlp,
)
from pcdistill.models.paths import get_path
from pcdistill.models.registry import register_model
from pcdistill.ops import gather, knn


@dataclass(frozen=True)
class Config:
    """Widths and depths of a PointMLP; stage i keeps `anchors[i]` points."""

    embed: int
    stages: tuple[int, ...]  # output width of each stage
    bottlenecks: tuple[int, ...]  # inner width of each stage's residual blocks
    pre_blocks: tuple[int, ...]  # residual blocks per neighbour, before pooling them
    pos_blocks: tuple[int, ...]  # residual blocks per anchor, after pooling
    anchors: tuple[int, ...] = (512, 256, 128, 64)


POINTMLP = Config(
    embed=64,
    stages=(128, 256, 512, 1024),
    bottlenecks=(128, 256, 512, 1024),
    pre_blocks=(2, 2, 2, 2),
    pos_blocks=(2, 2, 2, 2),
)
POINTMLP_ELITE = Config(
    embed=32,
    stages=(64, 128, 256, 256),
    bottlenecks=(16, 32, 64, 64),
    pre_blocks=(1, 1, 2, 1),
    pos_blocks=(1, 1, 2, 1),
)
K = 24
HEAD_WIDTHS = (512, 256)
HEAD_DROPOUT = (0.5, 0.5)


class ResidualBlock(nn.Module):
    """relu(x + MLP(x)), the MLP going through a bottleneck of 1x1 convolutions."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv1d(channels, bottleneck, 1, bias=False),
            nn.BatchNorm1d(bottleneck),
            nn.ReLU(),
            nn.Conv1d(bottleneck, channels, 1, bias=False),
            nn.BatchNorm1d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.mlp(x))


class Stage(nn.Module):
    """Sample anchors, group and normalise neighbours, Φ_pre, max over neighbours, Φ_pos."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck: int,
        pre_blocks: int,
        pos_blocks: int,
        anchors: int,
    ) -> None:
        super().__init__()
        self.anchors = anchors
        self.affine_alpha = nn.Parameter(torch.ones(in_channels))
        self.affine_beta = nn.Parameter(torch.zeros(in_channels))
        # Each neighbour enters as (normalised feature, its anchor's feature).
        self.transfer = shared_mlp([2 * in_channels, out_channels], bias=False)
        self.pre = nn.Sequential(
            *(ResidualBlock(out_channels, bottleneck) for _ in range(pre_blocks))
        )
        self.pos = nn.Sequential(
            *(ResidualBlock(out_channels, bottleneck) for _ in range(pos_blocks))
        )

    def forward(self, xyz: Tensor, x: Tensor, fps_ordered: bool) -> tuple[Tensor, Tensor]:
        """xyz (B, N, 3), features x (B, N, C) -> anchors (B, M, 3), features (B, M, C')."""
        idx = sample_centroids(xyz, self.anchors, fps_ordered)
        anchor_xyz, anchor = gather(xyz, idx), gather(x, idx)
        neighbours = knn(anchor_xyz, xyz, K)
        b, m, k = neighbours.shape
        if get_path() == "fast":
            h = self._transfer_per_point(x, anchor, neighbours)
        else:
            grouped = self.geometric_affine(gather(x, neighbours), anchor)
            c = grouped.shape[-1]
            grouped = torch.cat([grouped, anchor.unsqueeze(2).expand(b, m, k, c)], dim=-1)
            h = self.transfer(grouped.reshape(b, m * k, 2 * c).transpose(1, 2))
        h = self.pre(h)
        h = self.pos(h.view(b, -1, m, k).amax(dim=-1))  # (B, C', M)
        return anchor_xyz, h.transpose(1, 2)

    def _transfer_per_point(self, x: Tensor, anchor: Tensor, neighbours: Tensor) -> Tensor:
        """`transfer` of the normalised neighbours, (B, C', M * k), with its convolution
        applied per point before grouping. With W = [W1 W2] split at the input halves,
        U = W1·diag(alpha) and s = std + 1e-5:
        W·[alpha * (f_j - a) / s + beta; a] = U·f_j / s + (W2·a + W1·beta - U·a / s),
        so the grouped tensor is formed once at the output width from a per-point and a
        per-anchor term, instead of a 2C-wide concatenation and a matmul per neighbour
        (two thirds of a stage's per-neighbour multiplies in PointMLP-elite)."""
        conv, norm, act = self.transfer
        b, m, k = neighbours.shape
        c = x.shape[-1]
        w = conv.weight.reshape(conv.out_channels, 2 * c)
        w1, w2 = w[:, :c], w[:, c:]
        u = w1 * self.affine_alpha
        s = self._offset_std(gather(x, neighbours) - anchor.unsqueeze(2)).view(-1, 1, 1) + 1e-5
        per_anchor = anchor @ w2.t() + w1 @ self.affine_beta - (anchor @ u.t()) / s
        grouped = gather((x @ u.t()) / s, neighbours) + per_anchor.unsqueeze(2)  # (B, M, k, C')
        return act(norm(grouped.reshape(b, m * k, -1).transpose(1, 2)))

    def geometric_affine(self, grouped: Tensor, anchor: Tensor) -> Tensor:
        """Neighbour features (B, M, k, C) as offsets from their anchor (B, M, C), divided by
        the cloud's standard deviation of offsets, then scaled and shifted per channel.
        """
        offsets = grouped - anchor.unsqueeze(2)
        std = self._offset_std(offsets).view(-1, 1, 1, 1)
        return self.affine_alpha * offsets / (std + 1e-5) + self.affine_beta

    @staticmethod
    def _offset_std(offsets: Tensor) -> Tensor:
        """(B,) standard deviation of each cloud's neighbour offsets (B, M, k, C)."""
        return offsets.flatten(1).std(dim=1)


class PointMLP(PointClassifier):
    """PointMLP classifier on xyz; `fps_ordered` as in `pcdistill.models.pointnet2.PointNet2`."""

    def __init__(
        self, config: Config, num_classes: int = 40, width: float = 1.0, fps_ordered: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(fps_ordered, bool):
            raise ModelError(f"fps_ordered must be True or False, got {fps_ordered!r}")
        self.min_points = config.anchors[0]
        self.fps_ordered = fps_ordered
        embed = scale_width(config.embed, width)
        self.embedding = shared_mlp([3, embed], bias=False)

        self.stages = nn.ModuleList()
        channels = embed
        for out, bottleneck, pre, pos, anchors in zip(
            config.stages,
            config.bottlenecks,
            config.pre_blocks,
            config.pos_blocks,
            config.anchors,
            strict=True,
        ):
            out = scale_width(out, width)
            self.stages.append(
                Stage(channels, out, scale_width(bottleneck, width), pre, pos, anchors)
            )
            channels = out

        self.global_dim = channels
        hidden = [scale_width(c, width) for c in HEAD_WIDTHS]
        self.head = mlp_head([self.global_dim, *hidden], num_classes, dropout=HEAD_DROPOUT)

    def forward_features(self, points: Tensor) -> dict[str, Tensor]:
        """Named features: "stage1".."stage4" (B, M, C) per stage and "global" (B, C)."""
        xyz = points
        x = self.embedding(points.transpose(1, 2)).transpose(1, 2)
        feats: dict[str, Tensor] = {}
        for i, stage in enumerate(self.stages, start=1):
            # anchors come out of FPS in FPS order, so every later FPS is a prefix
            xyz, x = stage(xyz, x, self.fps_ordered or i > 1)
            feats[f"stage{i}"] = x
        feats["global"] = x.amax(dim=1)
        return feats


@register_model
def pointmlp(num_classes: int = 40, width: float = 1.0, fps_ordered: bool = False) -> PointMLP:
    """PointMLP, the authors' ModelNet40 configuration."""
    return PointMLP(POINTMLP, num_classes, width, fps_ordered)


@register_model
def pointmlp_elite(
    num_classes: int = 40, width: float = 1.0, fps_ordered: bool = False
) -> PointMLP:
    """PointMLP-elite, the authors' light configuration."""
    return PointMLP(POINTMLP_ELITE, num_classes, width, fps_ordered)
