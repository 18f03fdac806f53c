"""DGCNN, dynamic graph CNN, for classification.

Wang, Sun, Liu, Sarma, Bronstein, Solomon, "Dynamic Graph CNN for Learning on Point
Clouds", ACM TOG 2019 (arXiv 1801.07829).

Each EdgeConv layer links every point to its k = 20 nearest neighbours in the current
feature space (so the graph is rebuilt per layer: "dynamic"), applies a shared MLP to
the edge features (x_j - x_i, x_i) and max-pools over the neighbours. The four EdgeConv
outputs are concatenated, embedded to 1024 channels, and max- and mean-pooled into a
2048-d global feature, classified by a (512, 256) head with dropout 0.5. Activations
are LeakyReLU(0.2) and layers followed by BatchNorm have no bias (the authors' code
keeps a redundant one on the second head layer: 256 parameters more than here).
"""

import torch
from torch import Tensor, nn

from pcdistill.models.grouped_mlp import first_layer, grouped_max
from pcdistill.models.layers import PointClassifier, mlp_head, scale_width, shared_mlp
from pcdistill.models.paths import get_path
from pcdistill.models.registry import register_model
from pcdistill.ops import gather, knn

K = 20
EDGE_WIDTHS = (64, 64, 128, 256)
EMBED_WIDTH = 1024
HEAD_WIDTHS = (512, 256)
HEAD_DROPOUT = (0.5, 0.5)
NEGATIVE_SLOPE = 0.2


class EdgeConv(nn.Module):
    """One EdgeConv layer: kNN graph on the input features, MLP on edges, max over neighbours."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mlp = shared_mlp(
            [2 * in_channels, out_channels],
            conv=nn.Conv2d,
            bias=False,
            negative_slope=NEGATIVE_SLOPE,
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, C) -> (B, N, C')."""
        idx = knn(x, x, K)  # (B, N, K), each point is its own nearest
        if get_path() == "fast":
            # W·[x_j - x_i; x_i] = W_a·x_j - (W_a - W_b)·x_i: the first layer per point,
            # the grouped tensor only at its output width (`grouped_mlp`).
            w, _ = first_layer(self.mlp)
            w_a, w_b = w.split(x.shape[-1], dim=1)
            return grouped_max(x @ w_a.t(), x @ (w_a - w_b).t(), idx, self.mlp)
        neighbours = gather(x, idx)  # (B, N, K, C)
        centre = x.unsqueeze(2).expand_as(neighbours)
        edges = torch.cat([neighbours - centre, centre], dim=-1).permute(0, 3, 1, 2)
        return self.mlp(edges).amax(dim=-1).transpose(1, 2)


class DGCNN(PointClassifier):
    """DGCNN classifier on xyz."""

    min_points = K

    def __init__(self, num_classes: int = 40, width: float = 1.0) -> None:
        super().__init__()
        widths = [scale_width(c, width) for c in EDGE_WIDTHS]
        self.edge_convs = nn.ModuleList(
            EdgeConv(c_in, c_out) for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True)
        )
        embed = scale_width(EMBED_WIDTH, width)
        self.embed = shared_mlp([sum(widths), embed], bias=False, negative_slope=NEGATIVE_SLOPE)

        self.global_dim = 2 * embed  # max- and mean-pooled
        hidden = [scale_width(c, width) for c in HEAD_WIDTHS]
        self.head = mlp_head(
            [self.global_dim, *hidden],
            num_classes,
            dropout=HEAD_DROPOUT,
            bias=False,
            negative_slope=NEGATIVE_SLOPE,
        )

    def forward_features(self, points: Tensor) -> dict[str, Tensor]:
        """Named features: "edge1".."edge4" (B, N, C) and "global" (B, 2 * embed)."""
        feats: dict[str, Tensor] = {}
        x = points
        for i, edge_conv in enumerate(self.edge_convs, start=1):
            x = feats[f"edge{i}"] = edge_conv(x)
        x = self.embed(torch.cat(list(feats.values()), dim=-1).transpose(1, 2))  # (B, embed, N)
        feats["global"] = torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=-1)
        return feats


@register_model
def dgcnn(num_classes: int = 40, width: float = 1.0) -> DGCNN:
    """DGCNN with k = 20 and a 1024-d embedding."""
    return DGCNN(num_classes, width)
