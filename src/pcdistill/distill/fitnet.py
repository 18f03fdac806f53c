"""FitNet-style feature distillation (Romero et al., ICLR 2015, arXiv 1412.6550).

A learned linear projection maps the student's feature to the teacher's width;
the loss is the mean squared error to the (frozen) teacher feature. We use the
global feature, so it works across architectures whose per-point features do
not align.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.objective import Outputs
from pcdistill.engine.batches import Batch


class FeatureProjector(nn.Module):
    """Linear map from student width to teacher width (trained with the student)."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, feature: Tensor) -> Tensor:
        return self.proj(feature)


def fitnet_loss(projected_student: Tensor, teacher_feature: Tensor) -> Tensor:
    """MSE between the projected student feature and the teacher feature."""
    return F.mse_loss(projected_student, teacher_feature.detach().float())


class FitNet:
    """weight·MSE(P f_s, f_t) on global features (live or recorded with --features)."""

    uses_teacher, uses_features = True, True

    def __init__(self, student_dim: int, teacher_dim: int, weight: float = 1.0) -> None:
        self.projector = FeatureProjector(student_dim, teacher_dim)
        self.weight = weight

    def parameters(self) -> list[nn.Parameter]:
        return list(self.projector.parameters())

    def to(self, device: torch.device) -> FitNet:
        self.projector.to(device)
        return self

    def __call__(
        self, model: nn.Module, batch: Batch, student: Outputs, teacher: Outputs
    ) -> Tensor:
        return self.weight * fitnet_loss(self.projector(student.feature), teacher.feature)

    def state_dict(self) -> dict:
        return self.projector.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.projector.load_state_dict(state)
