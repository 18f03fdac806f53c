"""Building blocks shared by every architecture of the zoo.

Everything here is made of plain `nn.Conv1d`/`nn.Conv2d`/`nn.Linear`/`nn.BatchNorm*`
so that a network-augmentation supernet (T3DNet, Yang et al. 2024) can widen any
layer and share weights by slicing its leading channels.
"""

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from pcdistill.errors import ModelError
from pcdistill.ops import farthest_point_sample


def scale_width(channels: int, width: float) -> int:
    """The width multiplier's one rounding rule: `channels * width` to the nearest integer
    (halves round up), and at least 1.

    It applies to every hidden width (convolution, linear and embedding channels), never
    to input channels or the number of classes. The reference widths of every
    architecture are multiples of 8, so width 1/8 (T3DNet's tiny model) is exact: it
    gives PointNet++ MSG the published 30,184 parameters for 40 classes.
    """
    return max(1, math.floor(channels * width + 0.5))


def shared_mlp(
    channels: Sequence[int],
    *,
    conv: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv1d,
    bias: bool = True,
    negative_slope: float = 0.0,
) -> nn.Sequential:
    """PointNet's shared MLP: a 1x1 convolution + BatchNorm + (leaky) ReLU per step of
    `channels`, applied identically to every point (Qi et al. 2017, arXiv 1612.00593).

    `conv=nn.Conv2d` processes grouped neighbourhoods (B, C, M, k).
    """
    norm = nn.BatchNorm1d if conv is nn.Conv1d else nn.BatchNorm2d
    layers: list[nn.Module] = []
    for c_in, c_out in pairwise(channels):
        layers += [conv(c_in, c_out, 1, bias=bias), norm(c_out), _activation(negative_slope)]
    return nn.Sequential(*layers)


def mlp_head(
    dims: Sequence[int],
    out_dim: int,
    *,
    dropout: Sequence[float],
    bias: bool = True,
    negative_slope: float = 0.0,
) -> nn.Sequential:
    """Fully connected stack from `dims[0]` through hidden `dims[1:]` to `out_dim`.

    Each hidden layer is Linear + BatchNorm + (leaky) ReLU + Dropout (one rate per
    hidden layer); the last layer is a plain Linear. This is the classifier head of
    every model here and the regressor of PointNet's T-Nets.
    """
    layers: list[nn.Module] = []
    for c_in, c_out, p in zip(dims[:-1], dims[1:], dropout, strict=True):
        layers += [
            nn.Linear(c_in, c_out, bias=bias),
            nn.BatchNorm1d(c_out),
            _activation(negative_slope),
            nn.Dropout(p),
        ]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def _activation(negative_slope: float) -> nn.Module:
    return nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()


def sample_centroids(xyz: Tensor, m: int, fps_ordered: bool) -> Tensor:
    """Indices (B, m) of m farthest points of xyz (B, N, 3), starting at index 0.

    With `fps_ordered` the clouds are assumed stored in FPS order, where FPS to m
    points is the first m points (the FPS prefix property, DESIGN.md), so sampling
    costs nothing and gives exactly the same centroids, themselves in FPS order.
    """
    if fps_ordered:
        return torch.arange(m, device=xyz.device).expand(xyz.shape[0], m)
    return farthest_point_sample(xyz, m)


class PointClassifier(nn.Module):
    """The contract of every model: points (B, N, in_channels) -> logits (B, num_classes).

    Subclasses build `head` (global feature -> logits) and set `global_dim`,
    `in_channels` (3 for xyz, plus any extra per-point features) and `min_points`,
    then implement `forward_features`, which returns named features including
    "global" (B, global_dim), the input of `head`. Distillation methods use the
    named features (FitNet, FAD) and `head` (FAD's teacher-head critic).
    """

    head: nn.Module
    global_dim: int
    in_channels: int = 3
    min_points: int = 1

    def forward_features(self, points: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(
        self, points: Tensor, return_features: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        self._check_input(points)
        feats = self.forward_features(points)
        logits = self.head(feats["global"])
        return (logits, feats) if return_features else logits

    def _check_input(self, points: Tensor) -> None:
        name = type(self).__name__
        if points.ndim != 3 or points.shape[-1] != self.in_channels:
            raise ModelError(
                f"{name} expects points of shape (B, N, {self.in_channels}), "
                f"got {tuple(points.shape)}"
            )
        dtype = next(self.parameters()).dtype
        if points.dtype != dtype:
            raise ModelError(
                f"{name} expects {dtype} points (its weights' type), got {points.dtype}"
            )
        if points.shape[1] < self.min_points:
            raise ModelError(
                f"{name} needs at least {self.min_points} points per cloud, got {points.shape[1]}"
            )
