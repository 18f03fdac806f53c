"""Distillation loss terms against values computed by hand, and NWSD's sign and bounds."""

import math

import pytest
import torch

from pcdistill.distill.dkd import dkd_loss
from pcdistill.distill.fitnet import FeatureProjector, fitnet_loss
from pcdistill.distill.kd import kd_loss
from pcdistill.distill.nwsd import CopyTargets, beta_schedule, nwsd_term


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_dkd_golden_value():
    zs, zt, y, tau, alpha, beta = [2.0, 1.0, 0.0], [0.5, 2.5, -1.0], 1, 2.0, 1.0, 8.0
    ps = softmax([v / tau for v in zs])
    pt = softmax([v / tau for v in zt])
    tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    rest = [i for i in range(3) if i != y]
    nckd = kl(softmax([zt[i] / tau for i in rest]), softmax([zs[i] / tau for i in rest]))
    expected = tau * tau * (alpha * tckd + beta * nckd)
    got = dkd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), alpha, beta, tau)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_parts_add_up_to_kd_for_alpha_one_and_beta_equal_to_one_minus_target_prob():
    # Zhao et al.'s identity: KD = TCKD + (1 - p_t,y)·NCKD, exactly, per sample.
    s, t, y = torch.tensor([[0.3, -1.2, 2.0, 0.1]]), torch.tensor([[1.0, 0.5, -0.5, 2.0]]), 3
    tau = 3.0
    pty = (t / tau).softmax(1)[0, y].item()
    tckd = dkd_loss(s, t, torch.tensor([y]), alpha=1.0, beta=0.0, tau=tau)
    nckd = dkd_loss(s, t, torch.tensor([y]), alpha=0.0, beta=1.0, tau=tau)
    assert (tckd + (1 - pty) * nckd).item() == pytest.approx(kd_loss(s, t, tau).item(), rel=1e-5)


def test_fitnet_is_mse_after_projection():
    proj = FeatureProjector(2, 3)
    with torch.no_grad():
        proj.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        proj.proj.bias.zero_()
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    # projected = [1, 2, 3]; squared errors 0, 4, 9 -> mean 13/3
    assert fitnet_loss(proj(s), t).item() == pytest.approx(13 / 3)


def test_nwsd_gradient_pushes_away_from_the_stale_prediction():
    self_logits = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.tensor([[1.5, 0.2, -0.5]], requires_grad=True)
    beta = 0.1
    loss = -beta * nwsd_term(student, self_logits, tau=2.0, clip=10.0)
    loss.backward()
    # Gradient descent on the loss increases the KL to the stale prediction...
    with torch.no_grad():
        before = nwsd_term(student, self_logits, 2.0, 10.0)
        after = nwsd_term(student - 0.5 * student.grad, self_logits, 2.0, 10.0)
    assert after > before
    # ...i.e. the gradient is exactly the negative of the plain KL-to-self gradient, times beta.
    plain = student.detach().clone().requires_grad_(True)
    nwsd_term(plain, self_logits, 2.0, 10.0).backward()
    torch.testing.assert_close(student.grad, -beta * plain.grad)


def test_nwsd_is_clipped_so_it_cannot_diverge():
    self_logits = torch.tensor([[10.0, -10.0], [0.0, 0.0]])
    student = torch.tensor([[-10.0, 10.0], [0.1, 0.0]], requires_grad=True)
    term = nwsd_term(student, self_logits, tau=1.0, clip=1.0)
    kl_small = kl(softmax([0.0, 0.0]), softmax([0.1, 0.0]))
    assert term.item() == pytest.approx((1.0 + kl_small) / 2, rel=1e-5)  # first row clipped at 1
    term.backward()
    assert torch.all(student.grad[0] == 0)  # beyond the clip: no push at all
    assert torch.any(student.grad[1] != 0)


def test_beta_schedule_warms_up_holds_and_decays_to_zero():
    b = [beta_schedule(p, 0.2, warmup=0.1, decay_start=0.5) for p in (0, 0.05, 0.1, 0.3, 0.75, 1)]
    assert b == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.1, 0.0])
    with pytest.raises(ValueError):
        beta_schedule(0.5, 0.1, warmup=0.6, decay_start=0.5)


def test_self_targets_store_and_restore():
    store = CopyTargets(num_samples=4, copies=3, num_classes=2)
    idx, cp = torch.tensor([1, 3]), torch.tensor([2, 0])
    logits, seen = store.get(idx, cp)
    assert not seen.any()
    store.update(idx, cp, torch.tensor([[1.0, -1.0], [0.5, 0.25]]))
    logits, seen = store.get(idx, cp)
    assert seen.all() and torch.equal(logits, torch.tensor([[1.0, -1.0], [0.5, 0.25]]))
    other = CopyTargets(4, 3, 2)
    other.load_state_dict(store.state_dict())
    assert torch.equal(other.get(idx, cp)[0], logits)
    with pytest.raises(ValueError, match="expected"):
        CopyTargets(5, 3, 2).load_state_dict(store.state_dict())
