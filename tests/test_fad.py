"""FAD: each player's step lowers its own loss on a fixed toy batch."""

import pytest
import torch

from pcdistill.distill import Distill
from pcdistill.distill.fad import FAD, Discriminator, discriminator_loss, generator_loss
from pcdistill.engine.batches import Batch
from pcdistill.errors import ConfigError
from pcdistill.models import create_model


def test_discriminator_step_lowers_its_loss():
    torch.manual_seed(0)
    d = Discriminator(8, hidden=16)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    teacher_feat = torch.randn(32, 8) + 2.0
    student_feat = torch.randn(32, 8)
    before = discriminator_loss(d, teacher_feat, student_feat).item()
    for _ in range(20):
        opt.zero_grad()
        discriminator_loss(d, teacher_feat, student_feat).backward()
        opt.step()
    assert discriminator_loss(d, teacher_feat, student_feat).item() < 0.5 * before


def test_student_step_lowers_the_generator_loss():
    torch.manual_seed(0)
    d = Discriminator(8, hidden=16)
    with torch.no_grad():  # a fixed critic that prefers features near +2
        d.net[0].weight.copy_(torch.eye(16, 8))
        d.net[2].weight.fill_(1.0)
    student_feat = torch.randn(32, 8, requires_grad=True)
    opt = torch.optim.SGD([student_feat], lr=0.1)
    before = generator_loss(d, student_feat).item()
    for _ in range(20):
        opt.zero_grad()
        generator_loss(d, student_feat).backward()
        opt.step()
    assert generator_loss(d, student_feat).item() < before


def test_fad_term_alternates_and_both_variants_backprop():
    torch.manual_seed(0)
    teacher = create_model("pointnet", num_classes=5, width=0.25).eval()
    student = create_model("pointnet", num_classes=5, width=0.125)
    x = torch.randn(8, 64, 3)
    batch = Batch(x, torch.arange(8) % 5, torch.arange(8), torch.zeros(8, 0))
    fad = FAD(student.global_dim, teacher.global_dim, lam=0.5, d_lr=1e-2)
    objective = Distill({"fad": fad}, teacher)
    d_before = [p.detach().clone() for p in fad.disc.parameters()]
    loss, logits = objective(student, batch)
    assert logits.shape == (8, 5)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, fad.disc.parameters(), strict=True))
    loss.backward()
    assert fad.projector.weight.grad is not None and fad.projector.weight.grad.abs().sum() > 0
    head_weight = student.head[0].weight  # the T-Nets start at zero, so check the head
    assert head_weight.grad is not None and head_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert objective.extra_parameters() == list(fad.projector.parameters())

    head = FAD(student.global_dim, teacher.global_dim, critic="teacher_head",
               teacher_head=teacher.head)  # fmt: skip
    assert head.disc is None
    student.zero_grad()
    loss, _ = Distill({"fad": head}, teacher)(student, batch)
    loss.backward()
    assert head.projector.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ConfigError, match="teacher_head"):
        FAD(student.global_dim, teacher.global_dim, critic="teacher_head")
