"""One objective for every distillation run: CE plus the configured terms.

The student runs once per step (with its global feature only if a term needs it);
the teacher's outputs come from the batch when it was rebuilt from records, or
from a live teacher otherwise, so every term works online and offline alike.
A term is a callable `term(model, batch, student, teacher) -> loss` with two flags,
`uses_teacher` and `uses_features`, and optionally `parameters()` (trained by the
student's optimizer), `to(device)`, `set_progress(p)` and `state_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.engine.batches import Batch
from pcdistill.errors import ConfigError


@dataclass
class Outputs:
    logits: Tensor  # (B, C)
    feature: Tensor | None = None  # (B, D) global feature, the input of the classifier head


class Term(Protocol):
    uses_teacher: bool
    uses_features: bool

    def __call__(
        self, model: nn.Module, batch: Batch, student: Outputs, teacher: Outputs | None
    ) -> Tensor: ...


class Distill:
    """ce_weight·CE(z_s, y) + Σ terms."""

    def __init__(
        self,
        terms: dict[str, Term] | None = None,
        teacher: nn.Module | None = None,
        ce_weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        self.terms = dict(terms or {})
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.ce_weight, self.label_smoothing = ce_weight, label_smoothing
        self.features = any(t.uses_features for t in self.terms.values())
        self.needs_teacher = any(t.uses_teacher for t in self.terms.values())
        self.last: dict[str, float] = {}  # each term's value at the latest step, for logging

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        if self.features:
            logits, feats = model(batch.points, return_features=True)
            student = Outputs(logits, feats["global"])
        else:
            student = Outputs(model(batch.points))
        teacher = self._teacher(batch) if self.needs_teacher else None
        loss = self.ce_weight * F.cross_entropy(
            student.logits, batch.labels, label_smoothing=self.label_smoothing
        )
        for name, term in self.terms.items():
            value = term(model, batch, student, teacher)
            self.last[name] = float(value.detach())
            loss = loss + value
        return loss, student.logits

    def _teacher(self, batch: Batch) -> Outputs:
        if batch.teacher_logits is not None:  # rebuilt from records: no teacher forward
            if self.features and batch.teacher_features is None:
                raise ConfigError(
                    "a feature term (fitnet / fad) needs teacher features, but the records hold "
                    "none: record with `pcdistill record --features`"
                )
            return Outputs(batch.teacher_logits, batch.teacher_features)
        if self.teacher is None:
            raise ConfigError(f"loss terms {sorted(self.terms)} need a teacher or records")
        with torch.no_grad():
            logits, feats = self.teacher(batch.points, return_features=True)
        return Outputs(logits, feats["global"])

    def to(self, device: torch.device) -> Distill:
        if self.teacher is not None:
            self.teacher.to(device)
        for term in self.terms.values():
            if hasattr(term, "to"):
                term.to(device)
        return self

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for t in self.terms.values() if hasattr(t, "parameters") for p in t.parameters()]

    def set_progress(self, progress: float) -> None:
        for term in self.terms.values():
            if hasattr(term, "set_progress"):
                term.set_progress(progress)

    def state_dict(self) -> dict[str, Any]:
        return {n: t.state_dict() for n, t in self.terms.items() if hasattr(t, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, term_state in state.items():
            self.terms[name].load_state_dict(term_state)
