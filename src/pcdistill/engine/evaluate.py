"""Evaluation: accuracy metrics with optional voting over augmented copies."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pcdistill.engine.device import derive_seed
from pcdistill.engine.distributed import all_gather_objects
from pcdistill.engine.metrics import confusion_matrix, summarize
from pcdistill.transforms import ShapeAugment


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    points: Tensor,
    device: torch.device,
    batch_size: int = 64,
    vote: int = 0,
    vote_aug: ShapeAugment | None = None,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> Tensor:
    """Logits (S, C) in eval mode; with vote > 0, averaged over the clean cloud and `vote`
    copies augmented by `vote_aug` (seeded, so evaluation is repeatable).

    With `shard=(rank, world_size)` each rank runs every world_size-th batch and the
    logits are gathered, so the result equals a single process's, on every rank.
    """
    model.eval()
    rank, size = shard
    out = {}
    for start in range(0, len(points), batch_size)[rank::size]:
        x = points[start : start + batch_size]
        logits = model(x.to(device)).float()
        for v in range(vote):
            rng = np.random.default_rng(derive_seed(seed, "vote", v, start))
            params = vote_aug.sample(rng, len(x))
            logits += model(vote_aug.apply(x, params).to(device)).float()
        out[start] = (logits / (vote + 1)).cpu()
    if size > 1:
        out = {k: v for part in all_gather_objects(out) for k, v in part.items()}
    return torch.cat([out[k] for k in sorted(out)])


def evaluate(
    model: nn.Module,
    points: Tensor,
    labels: Tensor,
    class_names: list[str] | tuple[str, ...],
    device: torch.device,
    batch_size: int = 64,
    vote: int = 0,
    vote_aug: ShapeAugment | None = None,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """OA, mean class accuracy, per-class accuracy, confusion matrix, mean CE loss."""
    logits = predict_logits(model, points, device, batch_size, vote, vote_aug, seed, shard)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(class_names))
    return {"loss": loss, **summarize(cm, class_names)}


def evaluate_set(model: nn.Module, data: Any, device: torch.device, **options: Any) -> dict:
    """`evaluate` on a whole PointCloudSet (a split as loaded), `options` as there."""
    points, labels = torch.from_numpy(data.points), torch.from_numpy(data.labels)
    return evaluate(model.to(device), points, labels, data.class_names, device, **options)
