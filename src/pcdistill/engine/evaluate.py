"""Evaluation: accuracy metrics with optional voting over augmented copies."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pcdistill.engine.device import derive_seed
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
) -> Tensor:
    """Logits (S, C) in eval mode; with vote > 0, averaged over the clean cloud and `vote`
    copies augmented by `vote_aug` (seeded, so evaluation is repeatable)."""
    model.eval()
    out = []
    for start in range(0, len(points), batch_size):
        x = points[start : start + batch_size]
        logits = model(x.to(device)).float()
        for v in range(vote):
            rng = np.random.default_rng(derive_seed(seed, "vote", v, start))
            params = vote_aug.sample(rng, len(x))
            logits += model(vote_aug.apply(x, params).to(device)).float()
        out.append((logits / (vote + 1)).cpu())
    return torch.cat(out)


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
) -> dict:
    """OA, mean class accuracy, per-class accuracy, confusion matrix, mean CE loss."""
    logits = predict_logits(model, points, device, batch_size, vote, vote_aug, seed)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(class_names))
    return {"loss": loss, **summarize(cm, class_names)}
