"""Offline KD from recorded augmentations (Zheng, Zhang, Sun 2024, arXiv 2409.02020).

The student never sees the teacher: each batch carries the logits recorded for
exactly the augmented copy it was rebuilt from (`RecordedBatches`). The loss is
ce_weight·CE + α·τ²·KL(p_t ‖ p_s) — Hinton KD with ce_weight = 1 − α by default —
optionally minus β·NWSD (see `nwsd.py`), where β follows its schedule over the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.kd import kd_loss
from pcdistill.distill.nwsd import SelfTargets, beta_schedule, nwsd_term
from pcdistill.engine.batches import Batch


@dataclass
class NWSDSettings:
    beta: float = 0.1
    clip: float = 2.0
    warmup: float = 0.1
    decay_start: float = 0.5


class OfflineKD:
    def __init__(
        self,
        alpha: float = 0.9,
        tau: float = 4.0,
        ce_weight: float | None = None,
        nwsd: NWSDSettings | None = None,
        targets: SelfTargets | None = None,
    ) -> None:
        if (nwsd is None) != (targets is None):
            raise ValueError("NWSD needs both its settings and a SelfTargets store")
        self.alpha, self.tau = alpha, tau
        self.ce_weight = 1 - alpha if ce_weight is None else ce_weight
        self.nwsd, self.targets = nwsd, targets
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        """Called by the trainer before every step with the fraction of training done."""
        self.progress = progress

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        if batch.teacher_logits is None:
            raise ValueError("OfflineKD needs batches rebuilt from records (RecordedBatches)")
        logits = model(batch.points)
        loss = self.ce_weight * F.cross_entropy(logits, batch.labels)
        loss = loss + self.alpha * kd_loss(logits, batch.teacher_logits, self.tau)
        if self.nwsd is not None:
            s = self.nwsd
            stale, seen = self.targets.get(batch.index, batch.copy)
            beta = beta_schedule(self.progress, s.beta, s.warmup, s.decay_start)
            if beta > 0 and seen.any():
                seen = seen.to(logits.device)
                term = nwsd_term(logits[seen], stale.to(logits.device)[seen], self.tau, s.clip)
                loss = loss - beta * term * seen.float().mean()  # weight by the copies that count
            self.targets.update(batch.index, batch.copy, logits)
        return loss, logits

    def state_dict(self) -> dict:
        return {"targets": None if self.targets is None else self.targets.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.targets is not None and state["targets"] is not None:
            self.targets.load_state_dict(state["targets"])
