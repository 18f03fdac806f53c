"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022, arXiv 2203.08679).

Splits Hinton's KD into a target-class part and a non-target-class part and
weighs them separately:
  TCKD = τ²·KL(b_t ‖ b_s), b = [p_y, 1 − p_y] (binary: target vs the rest)
  NCKD = τ²·KL(p̂_t ‖ p̂_s), p̂ = softmax over the non-target classes only
  DKD  = α·TCKD + β·NCKD      (paper defaults α = 1, β = 8, τ = 4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.objective import Outputs
from pcdistill.engine.batches import Batch


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    tau: float = 4.0,
) -> Tensor:
    """α·TCKD + β·NCKD, averaged over the batch."""
    s, t = student_logits.float() / tau, teacher_logits.float() / tau
    target = F.one_hot(labels, s.shape[1]).bool()
    p_s, p_t = s.softmax(1), t.softmax(1)
    b_s = torch.stack([p_s[target], 1 - p_s[target]], dim=1).clamp_min(1e-12)
    b_t = torch.stack([p_t[target], 1 - p_t[target]], dim=1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    # Softmax over non-target classes: push the target logit to -inf.
    log_q_s = s.masked_fill(target, float("-inf")).log_softmax(1)
    log_q_t = t.masked_fill(target, float("-inf")).log_softmax(1)
    q_t = log_q_t.exp()
    nckd = (q_t * (log_q_t - log_q_s)).masked_fill(target, 0.0).sum(1).mean()
    return tau * tau * (alpha * tckd + beta * nckd)


class DKD:
    """weight·DKD on live or recorded teacher logits; CE stays at full weight (the paper's)."""

    uses_teacher, uses_features = True, False

    def __init__(
        self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, tau: float = 4.0
    ) -> None:
        self.weight, self.alpha, self.beta, self.tau = weight, alpha, beta, tau

    def __call__(
        self, model: nn.Module, batch: Batch, student: Outputs, teacher: Outputs
    ) -> Tensor:
        return self.weight * dkd_loss(
            student.logits, teacher.logits, batch.labels, self.alpha, self.beta, self.tau
        )
