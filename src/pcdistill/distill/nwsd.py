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
  reaches 0 at the end of training;
- the target is either the student's latest prediction for the same recorded
  copy (`CopyTargets`, needs records: a copy first drawn has no target and is
  skipped) or an exponential moving average of the student's weights run on the
  batch (`EMATarget`, works without records, costs one extra forward).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.objective import Outputs
from pcdistill.engine.batches import Batch
from pcdistill.engine.distributed import all_gather_objects
from pcdistill.errors import ConfigError


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


class CopyTargets:
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

    def targets(self, model: nn.Module, batch: Batch, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Stale predictions for the batch's copies, then store the fresh ones."""
        if batch.copy is None:
            raise ConfigError("loss.nwsd.target=copy needs records (set records:) or target=ema")
        stale, seen = self.get(batch.index, batch.copy)
        # Every rank keeps the whole store: apply all ranks' fresh predictions.
        mine = (batch.index.cpu(), batch.copy.cpu(), logits.detach().cpu())
        for index, copy_, fresh in all_gather_objects(mine):
            self.update(index, copy_, fresh)
        return stale.to(logits.device), seen.to(logits.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"logits": self.logits, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["logits"].shape != self.logits.shape:
            raise ValueError(
                f"NWSD targets have shape {tuple(state['logits'].shape)}, "
                f"expected {tuple(self.logits.shape)}"
            )
        self.logits, self.seen = state["logits"], state["seen"]


class EMATarget:
    """An exponential moving average of the student's weights, run in eval mode on the
    batch; made from the student at its first step (which therefore has no target)."""

    def __init__(self, decay: float = 0.999) -> None:
        self.decay = decay
        self.ema: nn.Module | None = None
        self._pending: dict[str, Tensor] | None = None  # restored before the model is known

    @torch.no_grad()
    def targets(self, model: nn.Module, batch: Batch, logits: Tensor) -> tuple[Tensor, Tensor]:
        model = getattr(model, "module", model)  # the module inside DistributedDataParallel
        if self.ema is None:
            self.ema = copy.deepcopy(model).eval().requires_grad_(False)
            if self._pending is None:
                return logits.detach(), torch.zeros(len(logits), dtype=torch.bool)
            self.ema.load_state_dict(self._pending)  # resumed: go on as if never stopped
            self._pending = None
        for e, p in zip(self.ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - self.decay)
        for e, b in zip(self.ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)
        return self.ema(batch.points).float(), torch.ones(len(logits), dtype=torch.bool)

    def state_dict(self) -> dict[str, Tensor] | None:
        return None if self.ema is None else self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Tensor] | None) -> None:
        if self.ema is None:
            self._pending = state
        elif state is not None:
            self.ema.load_state_dict(state)


class NWSD:
    """−β(t)·min(τ²·KL(p_self ‖ p_s), clip), averaged over the batch (copies without a
    target count as zero)."""

    uses_teacher, uses_features = False, False

    def __init__(
        self,
        target: CopyTargets | EMATarget,
        beta: float = 0.1,
        tau: float = 4.0,
        clip: float = 2.0,
        warmup: float = 0.1,
        decay_start: float = 0.5,
    ) -> None:
        beta_schedule(0.0, beta, warmup, decay_start)  # validates the schedule now
        self.target, self.beta, self.tau, self.clip = target, beta, tau, clip
        self.warmup, self.decay_start = warmup, decay_start
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = progress

    def __call__(self, model: nn.Module, batch: Batch, student: Outputs, teacher: object) -> Tensor:
        logits = student.logits
        stale, seen = self.target.targets(model, batch, logits)
        beta = beta_schedule(self.progress, self.beta, self.warmup, self.decay_start)
        seen = seen.to(logits.device)
        if beta == 0 or not seen.any():
            return logits.new_zeros(())
        term = nwsd_term(logits[seen], stale[seen], self.tau, self.clip)
        return -beta * term * seen.float().mean()

    def state_dict(self) -> dict | None:
        return self.target.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        self.target.load_state_dict(state)
