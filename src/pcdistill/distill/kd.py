"""Hinton knowledge distillation (Hinton, Vinyals, Dean 2015, arXiv 1503.02531).

L = (1 - α)·CE(z_s, y) + α·τ²·KL(p_t^τ ‖ p_s^τ), with p^τ = softmax(z / τ).
The τ² keeps the soft term's gradient scale independent of τ. The CE part is the
`Distill` objective's `ce_weight` (1 - α by default when KD is on).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.objective import Outputs
from pcdistill.engine.batches import Batch


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """τ²·KL(p_t^τ ‖ p_s^τ), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


class KD:
    """The α·τ²·KL term, on live or recorded teacher logits alike."""

    uses_teacher, uses_features = True, False

    def __init__(self, alpha: float = 0.9, tau: float = 4.0) -> None:
        self.alpha, self.tau = alpha, tau

    def __call__(
        self, model: nn.Module, batch: Batch, student: Outputs, teacher: Outputs
    ) -> Tensor:
        return self.alpha * kd_loss(student.logits, teacher.logits, self.tau)
