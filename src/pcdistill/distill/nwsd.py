"""Negative-weight self-distillation (NWSD), from offline distillation with recorded
augmentations (Zheng, Zhang, Sun 2024, arXiv 2409.02020).

The term −β·τ²·KL(p_self ‖ p_s) is added to a KD objective, where p_self is the
student's own earlier prediction for the same recorded copy. With a negative
weight it pushes the student away from its stale predictions, so it does not
settle on a copy of the teacher it cannot represent. Where we had to choose
(the paper's body is not available; DESIGN.md is the spec):
- the divergence is clipped per sample at `clip`, so the negative term is
  bounded below by −β·clip and cannot drive training to diverge; past the clip
  its gradient is zero;
- β follows `beta_schedule`: linear warm-up from 0, then a linear decay that
  reaches 0 at the end of training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nwsd_term(student_logits: Tensor, self_logits: Tensor, tau: float, clip: float) -> Tensor:
    """Batch mean of min(τ²·KL(p_self^τ ‖ p_s^τ), clip): the quantity NWSD maximises.

    The caller subtracts β times this from the loss.
    """
    log_p_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_p_self = F.log_softmax(self_logits.detach().float() / tau, dim=1)
    kl = (log_p_self.exp() * (log_p_self - log_p_s)).sum(1) * tau * tau
    return kl.clamp(max=clip).mean()


def beta_schedule(
    progress: float, beta: float, warmup: float = 0.1, decay_start: float = 0.5
) -> float:
    """β at training progress in [0, 1]: 0 → β over `warmup`, held, then → 0 at progress 1."""
    if not 0 <= warmup <= decay_start <= 1:
        raise ValueError(f"need 0 <= warmup <= decay_start <= 1, got {warmup}, {decay_start}")
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return beta * progress / warmup
    if progress <= decay_start:
        return beta
    return beta * (1.0 - progress) / (1.0 - decay_start)


class SelfTargets:
    """The student's latest logits for every recorded copy (sample i, copy k), float16.

    `seen` marks the copies predicted at least once; NWSD skips the others, since
    there is no earlier prediction to move away from.
    """

    def __init__(self, num_samples: int, copies: int, num_classes: int) -> None:
        self.logits = torch.zeros(num_samples, copies, num_classes, dtype=torch.float16)
        self.seen = torch.zeros(num_samples, copies, dtype=torch.bool)

    def get(self, index: Tensor, copy: Tensor) -> tuple[Tensor, Tensor]:
        """(logits float32 (B, C), seen mask (B,)) for the given copies."""
        index, copy = index.cpu(), copy.cpu()
        return self.logits[index, copy].float(), self.seen[index, copy]

    def update(self, index: Tensor, copy: Tensor, logits: Tensor) -> None:
        index, copy = index.cpu(), copy.cpu()
        self.logits[index, copy] = logits.detach().to("cpu", torch.float16)
        self.seen[index, copy] = True

    def state_dict(self) -> dict[str, Tensor]:
        return {"logits": self.logits, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["logits"].shape != self.logits.shape:
            raise ValueError(
                f"NWSD targets have shape {tuple(state['logits'].shape)}, "
                f"expected {tuple(self.logits.shape)}"
            )
        self.logits, self.seen = state["logits"], state["seen"]
