"""KD loss against values computed by hand."""

import math

import pytest
import torch

from pcdistill.distill import kd_loss


def test_kd_loss_golden_value():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    tau = 2.0
    # p_t = softmax([0, .5]), p_s = softmax([.5, 0]); KL = sum p_t log(p_t / p_s), times tau^2.
    e = math.exp(0.5)
    pt = [1 / (1 + e), e / (1 + e)]
    ps = [e / (1 + e), 1 / (1 + e)]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    assert kd_loss(s, t, tau).item() == pytest.approx(tau * tau * kl, rel=1e-6)
    assert kd_loss(t, t, tau).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_is_a_batch_mean():
    s = torch.randn(5, 7)
    t = torch.randn(5, 7)
    per_row = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], 4.0) for i in range(5)])
    assert kd_loss(s, t, 4.0).item() == pytest.approx(per_row.mean().item(), rel=1e-5)
