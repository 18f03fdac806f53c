"""FAD: feature adversarial distillation (Lee & Wu, ICIP 2023, arXiv 2306.14221).

A small discriminator D learns to tell the teacher's global feature from the
student's (projected to the teacher's width by P); the student learns to fool it:
  D step:       BCE(D(f_t), 1) + BCE(D(P f_s), 0)
  student step: CE + λ·BCE(D(P f_s), 1)  (+ α·KD when a teacher's logits are at hand)
The two steps alternate every batch: this objective runs D's step itself, with its
own optimizer, before returning the student's loss to the trainer.
Variant `critic="teacher_head"`: no D; the teacher's own classifier head judges the
projected student feature, student loss CE + λ·CE(head_t(P f_s), y).
Where we had to choose (DESIGN.md is the spec): D is Linear-LeakyReLU-Linear on
global features; P is linear and trained with the student; D uses Adam.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.distill.kd import kd_loss
from pcdistill.engine.batches import Batch


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
    def __init__(
        self,
        teacher: nn.Module,
        student_dim: int,
        lam: float = 0.1,
        critic: Literal["mlp", "teacher_head"] = "mlp",
        d_hidden: int = 256,
        d_lr: float = 1e-4,
        kd_alpha: float = 0.0,
        tau: float = 4.0,
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.lam, self.critic, self.kd_alpha, self.tau = lam, critic, kd_alpha, tau
        self.projector = nn.Linear(student_dim, teacher.global_dim)
        self.disc = Discriminator(teacher.global_dim, d_hidden) if critic == "mlp" else None
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=d_lr) if self.disc else None

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trained by the student's optimizer."""
        return list(self.projector.parameters())

    def to(self, device: torch.device) -> FAD:
        for m in (self.teacher, self.projector, self.disc):
            if m is not None:
                m.to(device)
        return self

    def discriminator_step(self, teacher_feat: Tensor, student_feat: Tensor) -> float:
        self.d_opt.zero_grad(set_to_none=True)
        loss = discriminator_loss(self.disc, teacher_feat.detach(), student_feat.detach())
        loss.backward()
        self.d_opt.step()
        return loss.item()

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            t_logits, t_feats = self.teacher(batch.points, return_features=True)
        logits, feats = model(batch.points, return_features=True)
        projected = self.projector(feats["global"])
        loss = F.cross_entropy(logits, batch.labels)
        if self.critic == "mlp":
            self.discriminator_step(t_feats["global"], projected)
            loss = loss + self.lam * generator_loss(self.disc, projected)
        else:
            loss = loss + self.lam * F.cross_entropy(self.teacher.head(projected), batch.labels)
        if self.kd_alpha:
            loss = loss + self.kd_alpha * kd_loss(logits, t_logits, self.tau)
        return loss, logits

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
