"""Pairwise squared distances, computed the one way every backend agrees on.

Ball membership and neighbour order are decided by comparing these numbers, so
each backend must round them identically. Coordinates (C <= 3) use exact
differences summed coordinate by coordinate, ((dx² + dy²) + dz²): the CPU kernels
and a plain numpy loop do the same arithmetic, so indices match bit for bit.
Wider features (DGCNN's 64-D) use |q|² + |r|² - 2 q·r, one batched matmul: exact
differences would materialise a (B, M, N, C) tensor. Its rounding can swap
neighbours whose distances agree to ~1e-6 relative; the CPU path selects from
this very tensor, so it stays identical to the torch path.
No square roots: only comparisons are needed.
"""

import torch
from torch import Tensor

EXACT_MAX_DIM = 3


def square_distance(query: Tensor, ref: Tensor) -> Tensor:
    """Squared distances (B, M, N) between query (B, M, C) and ref (B, N, C)."""
    if query.shape[-1] <= EXACT_MAX_DIM:
        d = (query[..., :1] - ref[..., 0].unsqueeze(1)).square_()
        for c in range(1, query.shape[-1]):
            d += (query[..., c : c + 1] - ref[..., c].unsqueeze(1)).square_()
        return d
    ref_sq = ref.square().sum(-1).unsqueeze(1)  # (B, 1, N)
    d = torch.baddbmm(ref_sq, query, ref.transpose(1, 2), alpha=-2)
    return d.add_(query.square().sum(-1, keepdim=True))
