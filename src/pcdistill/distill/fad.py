"""FAD: feature adversarial distillation (Lee & Wu, ICIP 2023, arXiv 2306.14221).

A small discriminator D learns to tell the teacher's global feature from the
student's (projected to the teacher's width by P); the student learns to fool it:
  D step:       BCE(D(f_t), 1) + BCE(D(P f_s), 0)
  student step: CE + λ·BCE(D(P f_s), 1)  (+ KD: add the `kd` term)
The two steps alternate every batch: this term runs D's step itself, with its
own optimizer, before returning the student's adversarial loss.
Variant `critic="teacher_head"`: no D; the teacher's own classifier head judges the
projected student feature, adding λ·CE(head_t(P f_s), y).
Where we had to choose (DESIGN.md is the spec): D is Linear-LeakyReLU-Linear on
global features; P is linear and trained with the student; D uses Adam.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.objective import Outputs
from pcdistill.engine.batches import Batch
from pcdistill.engine.distributed import average_gradients
from pcdistill.errors import ConfigError


class Discriminator(nn.Module):
    """Feature -> one logit: "this came from the teacher"."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, feature: Tensor) -> Tensor:
        return self.net(feature).squeeze(-1)


def discriminator_loss(d: Discriminator, teacher_feat: Tensor, student_feat: Tensor) -> Tensor:
    real, fake = d(teacher_feat), d(student_feat)
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def generator_loss(d: Discriminator, student_feat: Tensor) -> Tensor:
    fake = d(student_feat)
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


class FAD:
    uses_teacher, uses_features = True, True

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        lam: float = 0.1,
        critic: Literal["mlp", "teacher_head"] = "mlp",
        d_hidden: int = 256,
        d_lr: float = 1e-4,
        teacher_head: nn.Module | None = None,
    ) -> None:
        if critic == "teacher_head" and teacher_head is None:
            raise ConfigError("fad.critic=teacher_head needs the teacher checkpoint (teacher:)")
        self.lam, self.critic, self.head = lam, critic, teacher_head
        self.projector = nn.Linear(student_dim, teacher_dim)
        self.disc = Discriminator(teacher_dim, d_hidden) if critic == "mlp" else None
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=d_lr) if self.disc else None

    def parameters(self) -> list[nn.Parameter]:
        """Trained by the student's optimizer (D has its own)."""
        return list(self.projector.parameters())

    def to(self, device: torch.device) -> FAD:
        for m in (self.projector, self.disc, self.head):
            if m is not None:
                m.to(device)
        return self

    def discriminator_step(self, teacher_feat: Tensor, student_feat: Tensor) -> float:
        self.d_opt.zero_grad(set_to_none=True)
        loss = discriminator_loss(self.disc, teacher_feat.detach(), student_feat.detach())
        loss.backward()
        average_gradients(list(self.disc.parameters()))  # replicas stay equal under torchrun
        self.d_opt.step()
        return loss.item()

    def __call__(
        self, model: nn.Module, batch: Batch, student: Outputs, teacher: Outputs
    ) -> Tensor:
        projected = self.projector(student.feature)
        if self.disc is not None:
            self.discriminator_step(teacher.feature.float(), projected)
            return self.lam * generator_loss(self.disc, projected)
        return self.lam * F.cross_entropy(self.head(projected), batch.labels)

    def state_dict(self) -> dict:
        state = {"projector": self.projector.state_dict()}
        if self.disc is not None:
            state |= {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.projector.load_state_dict(state["projector"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.d_opt.load_state_dict(state["d_opt"])
