"""T3DNet network augmentation: the tiny model is the leading slice of the supernet."""

import pytest
import torch

from pcdistill.distill.netaug import NetAugSuperNet, reestimate_batchnorm
from pcdistill.errors import ModelError
from pcdistill.models import create_model
from pcdistill.models.paths import use_path


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = NetAugSuperNet("pointnet2_msg", num_classes=40, width=0.125, max_expand=3.0)
    # Non-trivial BN statistics, so a wrong slice of the buffers would show.
    with torch.no_grad():
        for m in net.supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_tiny_weights_are_slices_of_the_supernet(supernet):
    tiny = supernet.export_tiny()
    assert sum(p.numel() for p in tiny.parameters()) == 30_184
    assert sum(p.numel() for p in supernet.supernet.parameters()) > 6 * 30_184
    full = dict(supernet.supernet.named_parameters())
    w = tiny.levels[0].branches[2][3].weight  # (12, 8, 1, 1) inside (36, 24, 1, 1)
    assert torch.equal(w, full["levels.0.branches.2.3.weight"][:12, :8])
    # Level 2's input is [xyz, branch0, branch1, branch2] of level 1: sliced per segment.
    w = tiny.levels[1].branches[0][0].weight  # (8, 3 + 8 + 16 + 16)
    big = full["levels.1.branches.0.0.weight"]  # (24, 3 + 24 + 48 + 48)
    assert torch.equal(w[:, :3], big[:8, :3])
    assert torch.equal(w[:, 3:11], big[:8, 3:11])
    assert torch.equal(w[:, 11:27], big[:8, 27:43])
    assert torch.equal(w[:, 27:43], big[:8, 75:91])


def test_exported_tiny_logits_equal_the_supernet_minimum_width(supernet):
    x = torch.randn(2, 1024, 3, generator=torch.Generator().manual_seed(1))
    supernet.eval()
    tiny = supernet.export_tiny().eval()
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), supernet(x, expand=1.0), rtol=0, atol=0)
        wide = supernet(x, expand=2.0)
    assert wide.shape == (2, 40) and not torch.allclose(wide, tiny(x))


def test_gradients_of_a_wider_subnet_reach_the_shared_tiny_weights(supernet):
    supernet.train()
    x = torch.randn(4, 1024, 3, generator=torch.Generator().manual_seed(2))
    supernet.zero_grad()
    supernet(x, expand=3.0).sum().backward()
    g = supernet.supernet.levels[0].branches[0][0].weight.grad
    assert g is not None and g[:4].abs().sum() > 0  # the tiny model's channels learn too
    supernet.zero_grad()
    supernet(x, expand=1.0).sum().backward()
    g = supernet.supernet.levels[0].branches[2][3].weight.grad
    assert g[:12, :8].abs().sum() > 0 and g[12:].abs().sum() == 0  # only the tiny slice


def test_reestimated_batchnorm_is_the_exact_mean_over_the_batches():
    torch.manual_seed(0)
    model = create_model("pointnet2_ssg", num_classes=5, width=0.125)
    bn = model.levels[0].branches[0][1]  # the first BatchNorm: its input needs no other BN
    seen = []
    hook = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach()))
    batches = [torch.randn(3, 512, 3) for _ in range(3)]
    with use_path("reference"):  # the module is called (and hooked) on the reference path
        reestimate_batchnorm(model, batches)
    hook.remove()
    assert len(seen) == 3
    batch_means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])
    batch_vars = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen])
    torch.testing.assert_close(bn.running_mean, batch_means.mean(0), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0), rtol=1e-3, atol=1e-4)
    assert not model.training and bn.momentum == 0.1
    # the fused kernels' statistics are the same averages (float64: no rounding in the way)
    ref, fast = (create_model("pointnet2_ssg", num_classes=5, width=0.125).double() for _ in "ab")
    fast.load_state_dict(ref.state_dict())
    with use_path("reference"):
        reestimate_batchnorm(ref, [b.double() for b in batches])
    reestimate_batchnorm(fast, [b.double() for b in batches])
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-9, atol=1e-12)


def test_only_pointnet2_is_supported():
    with pytest.raises(ModelError, match="dgcnn"):
        NetAugSuperNet("dgcnn", 40, 0.125)


def test_netaug_objective_adds_a_wider_subnet_only_in_the_first_part():
    from pcdistill.distill.netaug import NetAugObjective
    from pcdistill.engine.batches import Batch

    torch.manual_seed(0)
    net = NetAugSuperNet("pointnet2_ssg", num_classes=5, width=0.125, max_expand=2.0).eval()
    x = torch.randn(2, 512, 3)
    batch = Batch(x, torch.tensor([1, 3]), torch.arange(2), torch.zeros(2, 0))
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        tiny_ce = ce(net(x, expand=1.0), batch.labels)
        wide_ce = ce(net(x, expand=2.0), batch.labels)
    objective = NetAugObjective(expand_choices=(2.0,), widen_until=0.5)
    objective.set_progress(0.2)
    with torch.no_grad():
        early, logits = objective(net, batch)
    torch.testing.assert_close(early, tiny_ce + wide_ce)
    torch.testing.assert_close(logits, net(x, expand=1.0))
    objective.set_progress(0.6)
    with torch.no_grad():
        late, _ = objective(net, batch)
    torch.testing.assert_close(late, tiny_ce)
