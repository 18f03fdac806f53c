"""Shape augmentations replay bit-exactly from their parameters; point ones are seeded."""

import json
import math

import numpy as np
import pytest
import torch

from pcdistill.errors import ConfigError
from pcdistill.transforms import (
    AnisotropicScale,
    Jitter,
    PointAugment,
    RandomDropout,
    RotateUp,
    ShapeAugment,
    Shuffle,
    Translate,
    UniformScale,
    default_shape_augment,
)


def clouds(b: int = 4, n: int = 256) -> torch.Tensor:
    return torch.randn(b, n, 3, generator=torch.Generator().manual_seed(1))


def test_replay_is_bit_exact_from_recorded_params():
    aug = default_shape_augment(rotate=True)
    x = clouds()
    params = aug.sample(np.random.default_rng(7), len(x))
    first = aug.apply(x, params)
    # Round-trip the parameters through float32 bytes and the spec through JSON, as a record would.
    stored = np.frombuffer(params.tobytes(), dtype=np.float32).reshape(params.shape)
    rebuilt = ShapeAugment.from_spec(json.loads(json.dumps(aug.spec())))
    replay = rebuilt.apply(x.clone(), stored)
    assert torch.equal(first, replay)
    # One cloud replayed alone equals its row in the batch.
    assert torch.equal(aug.apply(x[2:3], params[2:3]), first[2:3])


def test_sample_is_seeded_and_in_range():
    aug = default_shape_augment(rotate=True)
    a = aug.sample(np.random.default_rng(3), 1000)
    b = aug.sample(np.random.default_rng(3), 1000)
    assert a.dtype == np.float32 and a.shape == (1000, 7)
    np.testing.assert_array_equal(a, b)
    angle, scale, shift = a[:, 0], a[:, 1:4], a[:, 4:7]
    assert np.abs(angle).max() <= math.pi
    assert scale.min() >= 2 / 3 - 1e-6 and scale.max() <= 3 / 2 + 1e-6
    assert np.abs(shift).max() <= 0.2 + 1e-6
    # The draws actually span the range (a constant sampler would pass the bounds above).
    assert scale.min() < 0.7 and scale.max() > 1.45 and shift.std() > 0.1


def test_each_transform_does_what_it_says():
    x = clouds(2, 8)
    s = AnisotropicScale().apply(x, torch.tensor([[2.0, 1.0, 0.5], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(s[0], x[0] * torch.tensor([2.0, 1.0, 0.5]))
    torch.testing.assert_close(s[1], x[1])
    t = Translate().apply(x, torch.tensor([[0.1, -0.2, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(t[0] - x[0], torch.tensor([0.1, -0.2, 0.0]).expand(8, 3))
    u = UniformScale().apply(x, torch.tensor([[2.0], [1.0]]))
    torch.testing.assert_close(u[0], 2 * x[0])


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_rotation_is_a_right_handed_rotation_about_the_up_axis(axis):
    up = "xyz".index(axis)
    x = clouds(1, 64)
    r = RotateUp(axis=axis).apply(x, torch.tensor([[math.pi / 2]]))
    assert torch.equal(r[..., up], x[..., up])
    torch.testing.assert_close(r.norm(dim=-1), x.norm(dim=-1))
    # A quarter turn about `up` maps the next axis onto the one after it (x->y about z).
    e = torch.zeros(1, 1, 3)
    e[0, 0, (up + 1) % 3] = 1.0
    expected = torch.zeros(3)
    expected[(up + 2) % 3] = 1.0
    turned = RotateUp(axis=axis).apply(e, torch.tensor([[math.pi / 2]]))[0, 0]
    torch.testing.assert_close(turned, expected, atol=1e-6, rtol=0)


def test_bad_specs_and_params_are_clear_errors():
    with pytest.raises(ConfigError, match="warp"):
        ShapeAugment.from_spec([{"name": "warp"}])
    with pytest.raises(ConfigError, match="translate"):
        ShapeAugment.from_spec([{"name": "translate", "shfit": 0.1}])
    with pytest.raises(ConfigError, match="low=2"):
        AnisotropicScale(low=2, high=1)
    with pytest.raises(ConfigError, match="'w'"):
        RotateUp(axis="w")
    with pytest.raises(ConfigError, match=r"expected \(4, 7\)"):
        default_shape_augment(rotate=True).apply(clouds(), np.zeros((4, 6), np.float32))


def test_point_augmentations_are_seeded_and_keep_shape():
    x = clouds(3, 128)
    aug = PointAugment([Jitter(), RandomDropout(), Shuffle()])
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape

    j = Jitter(sigma=0.01, clip=0.02)(x, torch.Generator().manual_seed(0))
    assert 0 < (j - x).abs().max() <= 0.02 + 1e-6

    s = Shuffle()(x, torch.Generator().manual_seed(0))
    for i in range(3):  # the same points, another order
        assert torch.equal(s[i][torch.argsort(s[i][:, 0])], x[i][torch.argsort(x[i][:, 0])])

    d = RandomDropout(max_ratio=0.5)(x, torch.Generator().manual_seed(0))
    changed = (d != x).any(-1)
    assert changed.any()
    assert torch.equal(d[changed], x[:, :1].expand_as(x)[changed])
