"""PointNet for classification, with input and feature transform networks (T-Nets).

Qi, Su, Mo, Guibas, "PointNet: Deep Learning on Point Sets for 3D Classification and
Segmentation", CVPR 2017 (arXiv 1612.00593).

Every point goes through the same MLP; a symmetric max-pool over points makes the
global feature independent of point order. Two T-Nets, small PointNets themselves,
predict a 3x3 alignment of the input and a 64x64 alignment of the point features.
Widths follow the paper's classification network: MLP (64, 64), feature transform,
MLP (64, 128, 1024), max-pool, head (512, 256) with dropout 0.3 before the last layer.
Add `transform_regularizer(feats["feature_transform"])` with weight 0.001 to the loss,
as the paper does, to keep the feature transform close to orthogonal.
"""

import torch
from torch import Tensor, nn

from pcdistill.models.layers import PointClassifier, mlp_head, scale_width, shared_mlp
from pcdistill.models.registry import register_model

INPUT_MLP = (64, 64)
FEATURE_MLP = (64, 128, 1024)
TNET_MLP = (64, 128, 1024)
TNET_HEAD = (512, 256)
HEAD_WIDTHS = (512, 256)
HEAD_DROPOUT = (0.0, 0.3)


class TNet(nn.Module):
    """Predicts a k x k transform of its (B, k, N) input: shared MLP, max-pool, regressor.

    The last layer starts at zero, so the transform starts as the identity (as in the
    paper's code); no gradient reaches the layers before it until that layer moves.
    """

    def __init__(self, k: int, width: float) -> None:
        super().__init__()
        self.k = k
        self.mlp = shared_mlp([k] + [scale_width(c, width) for c in TNET_MLP])
        hidden = [scale_width(c, width) for c in TNET_HEAD]
        self.regressor = mlp_head(
            [scale_width(TNET_MLP[-1], width), *hidden], k * k, dropout=(0.0,) * len(hidden)
        )
        nn.init.zeros_(self.regressor[-1].weight)
        nn.init.zeros_(self.regressor[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        delta = self.regressor(self.mlp(x).amax(dim=-1)).view(-1, self.k, self.k)
        return delta + torch.eye(self.k, dtype=x.dtype, device=x.device)


class PointNet(PointClassifier):
    """PointNet classifier on xyz."""

    def __init__(self, num_classes: int = 40, width: float = 1.0) -> None:
        super().__init__()
        input_mlp = [scale_width(c, width) for c in INPUT_MLP]
        feature_mlp = [scale_width(c, width) for c in FEATURE_MLP]
        self.input_transform = TNet(3, width)
        self.input_mlp = shared_mlp([3, *input_mlp])
        self.feature_transform = TNet(input_mlp[-1], width)
        self.feature_mlp = shared_mlp([input_mlp[-1], *feature_mlp])

        self.global_dim = feature_mlp[-1]
        hidden = [scale_width(c, width) for c in HEAD_WIDTHS]
        self.head = mlp_head([self.global_dim, *hidden], num_classes, dropout=HEAD_DROPOUT)

    def forward_features(self, points: Tensor) -> dict[str, Tensor]:
        """Named features: the two transforms (B, k, k), "point" (B, N, C) and "global" (B, C)."""
        x = points.transpose(1, 2)  # (B, 3, N)
        input_transform = self.input_transform(x)
        x = self.input_mlp(input_transform.transpose(1, 2) @ x)
        feature_transform = self.feature_transform(x)
        x = self.feature_mlp(feature_transform.transpose(1, 2) @ x)
        return {
            "input_transform": input_transform,
            "feature_transform": feature_transform,
            "point": x.transpose(1, 2),
            "global": x.amax(dim=-1),
        }


def transform_regularizer(transform: Tensor) -> Tensor:
    """Mean over the batch of ||I - A A^T||_F^2 for transforms A (B, k, k); zero when
    every A is orthogonal. The paper adds it to the loss with weight 0.001.
    """
    eye = torch.eye(transform.shape[-1], dtype=transform.dtype, device=transform.device)
    return (eye - transform @ transform.transpose(1, 2)).square().sum(dim=(1, 2)).mean()


@register_model
def pointnet(num_classes: int = 40, width: float = 1.0) -> PointNet:
    """PointNet with input and feature T-Nets."""
    return PointNet(num_classes, width)
