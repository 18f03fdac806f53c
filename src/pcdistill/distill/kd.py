"""Hinton knowledge distillation (Hinton, Vinyals, Dean 2015, arXiv 1503.02531).

L = (1 - α)·CE(z_s, y) + α·τ²·KL(p_t^τ ‖ p_s^τ), with p^τ = softmax(z / τ).
The τ² keeps the soft term's gradient scale independent of τ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.engine.batches import Batch


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """τ²·KL(p_t^τ ‖ p_s^τ), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


class OnlineKD:
    """KD with the teacher run on every batch (the baseline offline KD is measured against)."""

    def __init__(self, teacher: nn.Module, alpha: float = 0.9, tau: float = 4.0) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha, self.tau = alpha, tau

    def to(self, device: torch.device) -> OnlineKD:
        self.teacher.to(device)
        return self

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(batch.points)
        logits = model(batch.points)
        ce = F.cross_entropy(logits, batch.labels)
        loss = (1 - self.alpha) * ce + self.alpha * kd_loss(logits, teacher_logits, self.tau)
        return loss, logits
