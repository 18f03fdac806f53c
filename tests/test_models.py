"""Model zoo: exact sizes, forward/backward, the feature contract, determinism, FPS order,
and clear errors. Parametrised over the registry, so a new model is tested on arrival.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcdistill.errors import ModelError
from pcdistill.models import create_model, list_models
from pcdistill.models.layers import scale_width
from pcdistill.models.pointnet import transform_regularizer
from pcdistill.ops import fps_order, gather

MODELS = list_models()
FPS_MODELS = ["pointmlp", "pointmlp_elite", "pointnet2_msg", "pointnet2_ssg"]
TINY = 1 / 8

# Exact counts at 40 classes. PointNet++ SSG/MSG and T3DNet's tiny model (MSG at 1/8) are
# the published reference numbers; the others pin what our definitions give.
EXACT_PARAMS = {
    ("pointnet", 1.0): 3_480_049,
    ("pointnet", TINY): 43_497,
    ("pointnet2_ssg", 1.0): 1_475_688,
    ("pointnet2_ssg", TINY): 25_456,
    ("pointnet2_msg", 1.0): 1_747_368,
    ("pointnet2_msg", TINY): 30_184,
    ("dgcnn", 1.0): 1_809_320,
    ("dgcnn", TINY): 29_976,
    ("pointmlp", 1.0): 13_238_504,
    ("pointmlp", TINY): 212_288,
    ("pointmlp_elite", 1.0): 716_232,
    ("pointmlp_elite", TINY): 13_404,
}
# Published approximate sizes. PointMLP-elite's "0.68M" is in units of 2**20: the authors'
# own count is 716,232 (ma-xu/pointMLP-pytorch issue #32).
PUBLISHED_PARAMS = {"dgcnn": 1.8e6, "pointmlp": 13.2e6, "pointmlp_elite": 0.68 * 2**20}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convolutions here cost mostly thread synchronisation, which stalls badly when
    # another process holds the second core; one thread is faster and leaves that core free.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def clouds(batch: int = 2, n: int = 1024, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, n, channels) * 2 - 1


def small_n(model: nn.Module) -> int:
    """A small point count that still exceeds what the model samples in its first stage."""
    return max(256, model.min_points + 128)


def first_layer(model: nn.Module) -> nn.Module:
    # PointNet's T-Nets start as the identity (zero last layer), so no gradient reaches
    # their earlier layers on the first step; the first layer of the main path must get one.
    return next(
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear) and "transform" not in name
    )


def test_registry_lists_every_architecture():
    assert MODELS == [
        "dgcnn",
        "pointmlp",
        "pointmlp_elite",
        "pointnet",
        "pointnet2_msg",
        "pointnet2_ssg",
    ]
    assert {name for name, _ in EXACT_PARAMS} == set(MODELS)


def test_width_rounding_rule():
    assert scale_width(96, TINY) == 12  # exact: every reference width is a multiple of 8
    assert scale_width(64, 0.3) == 19  # 19.2 to the nearest integer
    assert scale_width(5, 0.5) == 3  # halves round up
    assert scale_width(64, 1e-3) == 1  # never below one channel
    assert scale_width(1024, 2.5) == 2560  # widening (a T3DNet supernet) uses the same rule


@pytest.mark.parametrize(("name", "width"), list(EXACT_PARAMS))
def test_exact_parameter_count(name, width):
    assert n_params(create_model(name, num_classes=40, width=width)) == EXACT_PARAMS[name, width]


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_published_size_within_one_percent(name):
    count = n_params(create_model(name))
    assert count == EXACT_PARAMS[name, 1.0]
    assert abs(count / PUBLISHED_PARAMS[name] - 1) < 0.01


def test_extra_point_features_widen_only_the_first_level():
    plain = create_model("pointnet2_msg")
    normals = create_model("pointnet2_msg", in_features=3)
    # 3 more input channels into the first layer of each of the 3 first-level branches.
    assert n_params(normals) - n_params(plain) == 3 * (32 + 64 + 64)
    logits = create_model("pointnet2_ssg", width=TINY, in_features=3)(clouds(n=640, channels=6))
    assert logits.shape == (2, 40)


@pytest.mark.parametrize("width", [1.0, TINY], ids=["w1", "w1_8"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name, width):
    model = create_model(name, width=width)
    logits = model(clouds())
    assert logits.shape == (2, 40)
    assert torch.isfinite(logits).all()

    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert first_layer(model).weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_features_contract(name):
    model = create_model(name, num_classes=10, width=TINY).eval()
    pts = clouds(n=small_n(model))
    with torch.no_grad():
        logits, feats = model(pts, return_features=True)
        assert logits.shape == (2, 10)
        assert feats["global"].shape == (2, model.global_dim)
        assert len(feats) > 1 and all(f.shape[0] == 2 for f in feats.values())
        torch.testing.assert_close(model.head(feats["global"]), logits)
        torch.testing.assert_close(model(pts), logits)


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic_and_batch_independent(name):
    model = create_model(name, width=TINY).eval()
    pts = clouds(batch=3, n=small_n(model))
    with torch.no_grad():
        batched = model(pts)
        assert torch.equal(model(pts), batched)
        alone = model(pts[1:2])
    torch.testing.assert_close(alone, batched[1:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FPS_MODELS)
def test_fps_ordered_input_gives_the_same_logits(name):
    model = create_model(name, width=TINY).eval()
    prefix = create_model(name, width=TINY, fps_ordered=True).eval()
    prefix.load_state_dict(model.state_dict())
    pts = clouds(n=small_n(model))
    ordered = gather(pts, fps_order(pts))
    with torch.no_grad():
        torch.testing.assert_close(prefix(ordered), model(ordered), rtol=0, atol=0)


@pytest.mark.parametrize("name", FPS_MODELS)
def test_later_levels_take_the_fps_prefix_exactly(name, monkeypatch):
    """Levels after the first skip FPS (their input, the centroids, is in FPS order):
    running FPS there anyway must give the prefix itself, on plain clouds and on a cloud
    of a few repeated points, where FPS has run out of distinct points."""
    import pcdistill.models.layers as layers

    module = __import__(f"pcdistill.models.{name.split('_')[0]}", fromlist=["x"])
    model = create_model(name, width=TINY).eval()
    pts = clouds(n=small_n(model))
    pts[1] = pts[1, torch.arange(pts.shape[1]) % 7]  # 7 distinct points
    calls = []

    def always_fps(xyz, m, fps_ordered):
        idx = layers.farthest_point_sample(xyz, m)
        if fps_ordered:  # a later level: the prefix is exact (duplicates: same coordinates)
            calls.append(m)
            prefix = torch.arange(m).expand(xyz.shape[0], m)
            assert torch.equal(gather(xyz, idx), gather(xyz, prefix))
        return idx

    with torch.no_grad():
        logits = model(pts)
        monkeypatch.setattr(module, "sample_centroids", always_fps)
        torch.testing.assert_close(model(pts), logits, rtol=0, atol=0)
    assert calls  # the later levels did take the prefix


def test_pointnet_transforms_start_as_identity():
    model = create_model("pointnet", width=TINY).eval()
    with torch.no_grad():
        _, feats = model(clouds(n=256), return_features=True)
    for key in ("input_transform", "feature_transform"):
        k = feats[key].shape[-1]
        torch.testing.assert_close(feats[key], torch.eye(k).expand(2, k, k))
        assert transform_regularizer(feats[key]) == 0
    assert transform_regularizer(2 * torch.eye(3).expand(2, 3, 3)) == 27  # ||I - 4I||^2 = 3 * 9


def test_unknown_model_names_the_model_and_suggests_one():
    with pytest.raises(ModelError, match="pointnet2_mgs") as err:
        create_model("pointnet2_mgs")
    assert "did you mean 'pointnet2_msg'" in str(err.value).lower()
    assert all(name in str(err.value) for name in MODELS)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("dgcnn", {"fps_ordered": True}, "'dgcnn' does not accept 'fps_ordered'"),
        ("pointnet", {"in_features": 3}, "does not accept 'in_features'"),
        ("pointmlp", {"widht": 0.5}, "does not accept 'widht'; its options: fps_ordered"),
        ("pointnet2_msg", {"width": 0}, "width .* got 0$"),
        ("pointnet2_msg", {"width": -0.5}, "width .* got -0.5$"),
        ("pointnet2_msg", {"width": math.nan}, "width .* got nan$"),
        ("pointnet2_msg", {"num_classes": 1}, "num_classes .* got 1$"),
        ("pointnet2_msg", {"in_features": -1}, "in_features .* got -1$"),
        ("pointmlp_elite", {"fps_ordered": "yes"}, "fps_ordered .* got 'yes'$"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, message):
    with pytest.raises(ModelError, match=message):
        create_model(name, **kwargs)


def test_bad_input_is_named():
    model = create_model("pointnet2_ssg", width=TINY)
    with pytest.raises(ModelError, match=r"\(B, N, 3\).*\(2, 640, 6\)"):
        model(clouds(n=640, channels=6))
    with pytest.raises(ModelError, match="at least 512 points"):
        model(clouds(n=100))
    with pytest.raises(ModelError, match="float64"):
        model(clouds(n=640).double())
