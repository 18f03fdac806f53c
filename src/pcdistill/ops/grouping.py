"""Gathering points or features by index."""

import torch
from torch import Tensor

from pcdistill.ops.backend import building_graph


def gather(x: Tensor, idx: Tensor) -> Tensor:
    """Rows of x (B, N, C) picked by idx (B, *S): returns (B, *S, C).

    One index_select on the flattened batch: on CPU, forward plus backward (index_add)
    ran 1.4-2x faster than torch.gather over an index expanded to C channels, measured
    on PointNet++ neighbourhoods (32 x 512 x 128 from 1024 points, C = 3 to 64).
    """
    b, n, c = x.shape
    flat = flat_index(idx, n).reshape(-1)
    return x.reshape(b * n, c).index_select(0, flat).reshape(*idx.shape, c)


def flat_index(idx: Tensor, n: int) -> Tensor:
    """Per-cloud indices idx (B, *S) into clouds of n points, as rows of the (B * n, ...)
    flattened batch: cloud b's indices are offset by b * n."""
    b = idx.shape[0]
    if b == 1 and not building_graph():  # nothing to offset; a traced graph keeps the add
        return idx
    return idx + torch.arange(b, device=idx.device).view(b, *[1] * (idx.ndim - 1)) * n
