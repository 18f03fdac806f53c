"""The fast path (first layer per point, channels-first, fused CPU kernels) computes the
reference path's function: same logits, every parameter gradient, BatchNorm running
statistics, in training and in inference, for PointNet++ SSG / MSG, DGCNN and PointMLP.

Each case runs the fast path three times (`set_impl`): as shipped on the CPU (tiled
numba kernels for branches up to 64 channels, BLAS matmuls with the fused BatchNorm +
activation ops between them for wider ones), with every branch on the BLAS path, and
as the plain torch rewrite (the GPU, autocast, SyncBatchNorm and export path).

Tolerances, float64: logits within 1e-9 relative to the largest logit; every gradient
tensor within 1e-9 of its own norm, except those whose true gradient is zero (a bias
right before a training-mode BatchNorm, which cancels it, as PointMLP's affine beta; the
last BatchNorm shift of a branch whose max-pooled outputs are all positive, which the
next level's BatchNorm cancels): there both paths hold rounding noise, and both must stay
below 1e-9 of the largest gradient norm. Batches of 4 real shapes: BatchNorm over 2
samples, or a first layer over near-empty balls, is so ill-conditioned that the rounding
of any two float64 implementations parts.
"""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcdistill.data import builtin_dataset
from pcdistill.models import create_model, grouped_mlp
from pcdistill.models.layers import shared_mlp
from pcdistill.models.paths import get_path, set_path, use_path
from pcdistill.ops import backend

CASES = [
    ("pointnet2_ssg", 1.0, 0),
    ("pointnet2_ssg", 0.125, 0),
    ("pointnet2_ssg", 0.125, 3),
    ("pointnet2_msg", 1.0, 0),
    ("pointnet2_msg", 0.125, 0),
    ("pointnet2_msg", 1.0, 3),
    ("pointnet2_msg", 0.125, 3),
    ("dgcnn", 1.0, 0),
    ("dgcnn", 0.125, 0),
    ("pointmlp_elite", 1.0, 0),
    ("pointmlp", 0.125, 0),
]


IMPLS = ("default", "blas", "torch")


def set_impl(monkeypatch, impl: str) -> None:
    """Run the fast path as shipped ("default": tiled kernels up to FUSED_MAX_WIDTH
    channels, BLAS + BatchNorm kernels above), with every branch on BLAS matmuls and the
    BatchNorm + activation kernels between them ("blas"), with every branch on the tiled
    kernels ("kernels", for the ties test), or as the plain torch rewrite ("torch", the
    GPU path: point ops in torch too, which give the same indices)."""
    widths = {"kernels": 10**6, "blas": 0}
    monkeypatch.setattr(grouped_mlp, "FUSED_MAX_WIDTH", widths.get(impl, 64))
    monkeypatch.setattr(backend, "_backend", "torch" if impl == "torch" else "auto")


def build(name: str, width: float, features: int) -> torch.nn.Module:
    kwargs = {"in_features": features} if features else {}
    return create_model(name, num_classes=10, width=width, **kwargs).double()


def clouds(batch: int, n: int, features: int) -> torch.Tensor:
    """Real shapes (the built-in ModelNet40 cut), n points each, plus random features.

    Real surfaces at the training point count matter: in a uniform random cloud (or a
    sparse one) most radius-0.1 balls hold only their
    centroid, the first BatchNorm then sees a near-constant input, and the rewrite's
    per-point / per-centroid terms cancel with rounding amplified by its 1/std.
    """
    data = builtin_dataset("test", num_points=n).subset(range(0, 30 * batch, 30))
    xyz = torch.from_numpy(data.points).double()
    g = torch.Generator().manual_seed(3)
    extra = torch.randn(batch, n, features, generator=g, dtype=torch.float64)
    return torch.cat([xyz, extra], dim=-1)


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: str):
    with use_path(path):
        model.train()
        torch.manual_seed(1)  # the same dropout masks on both paths
        logits = model(x)
        F.cross_entropy(logits, y).backward()
    return logits.detach()


def assert_same_function(ref, fast, logits_ref, logits_fast):
    scale = logits_ref.abs().max()
    assert (logits_ref - logits_fast).abs().max() <= 1e-9 * scale
    grads = {k: p.grad for k, p in ref.named_parameters()}
    largest = max(g.norm() for g in grads.values())
    for (key, g_ref), (_, p_fast) in zip(grads.items(), fast.named_parameters(), strict=True):
        if g_ref.norm() <= 1e-9 * largest:  # a zero gradient: noise on both paths
            assert p_fast.grad.norm() <= 1e-9 * largest, key
            continue
        err = (g_ref - p_fast.grad).norm()
        assert err <= 1e-9 * g_ref.norm(), f"gradient of {key}: {err / g_ref.norm():.3g} relative"
    for (key, b_ref), (_, b_fast) in zip(ref.named_buffers(), fast.named_buffers(), strict=True):
        assert torch.allclose(b_ref.double(), b_fast.double(), rtol=1e-9, atol=1e-12), key


@pytest.mark.parametrize(("name", "width", "features"), CASES)
def test_fast_equals_reference_float64(name, width, features, monkeypatch):
    model = build(name, width, features)
    x = clouds(4, 512, features)
    y = torch.tensor([3, 7, 1, 5])
    ref = copy.deepcopy(model)
    logits_ref = train_step(ref, x, y, "reference")
    with torch.no_grad(), use_path("reference"):
        eval_ref = ref.eval()(x)
    scale = eval_ref.abs().max()
    for impl in IMPLS:
        set_impl(monkeypatch, impl)
        fast = copy.deepcopy(model)
        logits_fast = train_step(fast, x, y, "fast")
        assert_same_function(ref, fast, logits_ref, logits_fast)  # and running statistics
        fast.eval()
        if impl == "default":  # the inference kernels, BatchNorm folded
            with torch.no_grad(), use_path("fast"):
                assert (eval_ref - fast(x)).abs().max() <= 1e-9 * scale
        if impl == "torch":  # the torch rewrite, BatchNorm folded (on the CPU: wide branches
            with use_path("fast"):  # in inference, and any branch when gradients are wanted)
                assert (eval_ref - fast(x).detach()).abs().max() <= 1e-9 * scale


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_fused_chain_of_any_depth_equals_grouping_then_mlp(depth, slope, monkeypatch):
    """`grouped_max` on the tiled kernels for chains shorter and longer than PointNet++'s
    three layers (the first, middle and last layers take different kernel paths), ReLU
    and leaky ReLU: the max-pooled output, every gradient (parameters, per-point and
    per-group terms) and the running statistics equal grouping then the plain MLP."""
    set_impl(monkeypatch, "kernels")
    g = torch.Generator().manual_seed(depth)
    b, n, m, k, c_in = 2, 64, 16, 8, 5
    points = torch.randn(b, n, c_in, generator=g, dtype=torch.float64)
    centroids = points[:, :m, :3]
    idx = torch.randint(0, n, (b, m, k), generator=g)
    widths = [c_in, 6, 7, 4, 5][: depth + 1]
    ref = shared_mlp(widths, conv=torch.nn.Conv2d, negative_slope=slope).double()
    fast = copy.deepcopy(ref)
    out_grad = torch.randn(b, m, widths[-1], generator=g, dtype=torch.float64)

    pts_ref = points.clone().requires_grad_()
    grouped = torch.gather(pts_ref.unsqueeze(1).expand(b, m, n, c_in), 2,
                           idx.unsqueeze(-1).expand(b, m, k, c_in))  # fmt: skip
    grouped = torch.cat([grouped[..., :3] - centroids.unsqueeze(2), grouped[..., 3:]], -1)
    out_ref = ref(grouped.permute(0, 3, 1, 2)).amax(-1).transpose(1, 2)
    (out_ref * out_grad).sum().backward()

    pts_fast = points.clone().requires_grad_()
    w, bias = grouped_mlp.first_layer(fast)
    h = torch.nn.functional.linear(pts_fast, w, bias)
    centre = torch.nn.functional.linear(centroids, w[:, :3])
    out_fast = grouped_mlp.grouped_max(h, centre, idx, fast)
    (out_fast * out_grad).sum().backward()

    assert (out_fast - out_ref).abs().max() <= 1e-12 * out_ref.abs().max()
    assert (pts_fast.grad - pts_ref.grad).norm() <= 1e-10 * pts_ref.grad.norm()
    largest = max(p.grad.norm() for p in ref.parameters())
    for (key, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert (p_fast.grad - p_ref.grad).norm() <= 1e-10 * largest, key
    for (key, b_ref), b_fast in zip(ref.named_buffers(), fast.buffers(), strict=True):
        assert torch.allclose(b_ref.double(), b_fast.double(), rtol=1e-10, atol=1e-12), key


@pytest.mark.parametrize(("b", "m", "k"), [(3, 7, 128), (2, 5, 1), (1, 33, 20)])
def test_inference_kernel_equals_the_torch_rewrite_on_any_tiling(b, m, k, monkeypatch):
    """The inference kernel (whole folded chain per tile, neighbour-major tiles) against
    the torch rewrite: group counts that leave a partial last tile, k = 1, several
    clouds (each group's indices point into its own cloud), leaky ReLU."""
    g = torch.Generator().manual_seed(k)
    n, c_in = 50, 4
    points = torch.randn(b, n, c_in, generator=g, dtype=torch.float64)
    idx = torch.randint(0, n, (b, m, k), generator=g)
    mlp = shared_mlp([c_in, 6, 9, 5], conv=torch.nn.Conv2d, negative_slope=0.1).double()
    for module in mlp.modules():  # non-trivial running statistics to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1, generator=g)
            module.running_var.uniform_(0.5, 2, generator=g)
    mlp.eval()
    w, bias = grouped_mlp.first_layer(mlp)
    with torch.no_grad():
        h = torch.nn.functional.linear(points, w, bias)
        centre = torch.nn.functional.linear(points[:, :m, :3], w[:, :3])
        expected = grouped_mlp._grouped_max_torch(h, centre, idx, mlp)
        set_impl(monkeypatch, "kernels")
        got = grouped_mlp.grouped_max(h, centre, idx, mlp)
    assert got.shape == (b, m, 5)
    assert (got - expected).abs().max() <= 1e-12 * expected.abs().max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matmul_blocks_equal_one_row_at_a_time(dtype):
    """The kernels' matmul (outputs in blocks of four, inputs in blocks of eight, four,
    one) against numpy and against its one-output routine, for every remainder of both
    blocks: each output must come out bit-identical to `_matvec_row`'s, so a channel's
    value never depends on which block it fell in."""
    from pcdistill.ops.mlp_kernels import _matmul_acc, _matvec_row

    rng = np.random.default_rng(0)
    n = 37  # not a multiple of any vector width
    for c_out in range(1, 10):
        for c_in in range(1, 20):
            w = rng.standard_normal((c_out, c_in)).astype(dtype)
            a = rng.standard_normal((c_in, n)).astype(dtype)
            start = rng.standard_normal((c_out, n)).astype(dtype)
            out = start.copy()
            _matmul_acc(w, a, out, n)
            for o in range(c_out):
                row = start[o].copy()
                _matvec_row(w[o], a, row, n)
                assert np.array_equal(out[o], row), (c_out, c_in, o)
            exact = start.astype(np.float64) + w.astype(np.float64) @ a.astype(np.float64)
            tol = 1e-5 if dtype == np.float32 else 1e-13
            assert np.abs(out - exact).max() <= tol * np.abs(exact).max(), (c_out, c_in)


def test_neighbour_max_in_halves_is_the_max_over_every_neighbour():
    """The inference kernel's max over a neighbour-major tile, taken in halving steps,
    for every neighbour count up to 33 (odd counts carry a middle row) and group counts
    that are not vector widths; the tile row is longer than k * ng, as a last tile's is."""
    from pcdistill.ops.mlp_kernels import _neighbour_max

    rng = np.random.default_rng(0)
    for k in range(1, 34):
        for ng in (1, 3, 16):
            row = rng.standard_normal(k * ng + 5).astype(np.float32)
            halves = np.full((2, (k + 1) // 2 * ng), np.nan, np.float32)
            got = _neighbour_max(row, k, ng, halves)
            assert np.array_equal(got, row[: k * ng].reshape(k, ng).max(axis=0)), (k, ng)


def test_torch_inference_in_cache_sized_chunks_equals_one_pass(monkeypatch):
    """The torch inference rewrite on one CPU thread runs groups in chunks of about
    CHUNK_BYTES: a chunking that leaves a ragged last chunk gives the one-pass result
    (float64), and more threads, autograd or a graph being built take the one pass."""
    g = torch.Generator().manual_seed(3)
    b, n, m, k, c_in = 3, 40, 7, 6, 4  # 21 groups
    points = torch.randn(b, n, c_in, generator=g, dtype=torch.float64)
    idx = torch.randint(0, n, (b, m, k), generator=g)
    mlp = shared_mlp([c_in, 8, 10, 5], conv=torch.nn.Conv2d).double()
    for module in mlp.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1, generator=g)
            module.running_var.uniform_(0.5, 2, generator=g)
    mlp.eval()
    w, bias = grouped_mlp.first_layer(mlp)
    h = torch.nn.functional.linear(points, w, bias)
    centre = torch.nn.functional.linear(points[:, :m, :3], w[:, :3])
    calls = []
    chain = grouped_mlp._chain_max
    monkeypatch.setattr(grouped_mlp, "_chain_max", lambda *a: calls.append(1) or chain(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            whole = grouped_mlp._grouped_max_folded(h, centre, idx, mlp)
            assert len(calls) == 1
            monkeypatch.setattr(grouped_mlp, "CHUNK_BYTES", 8 * k * 10 * 4)  # 4 groups a chunk
            chunked = grouped_mlp._grouped_max_folded(h, centre, idx, mlp)
            assert len(calls) == 1 + 6  # 21 groups: five chunks of 4, one of 1
        with_grad = grouped_mlp._grouped_max_folded(h, centre, idx, mlp)
        assert len(calls) == 8
    finally:
        torch.set_num_threads(threads)
    assert chunked.shape == whole.shape == (b, m, 5)
    assert (chunked - whole).abs().max() <= 1e-12 * whole.abs().max()
    assert torch.equal(with_grad, whole)


def test_the_fast_path_is_the_default_and_selectable():
    assert get_path() == "fast"
    with use_path("reference"):
        assert get_path() == "reference"
    assert get_path() == "fast"
    with pytest.raises(ValueError, match="unknown model path"):
        set_path("fused")


def test_fused_kernels_take_ball_query_padding_and_ties(monkeypatch):
    """Groups padded with repeats of their first point (sparse balls) and an input whose
    neighbourhoods are all identical: the max has exact ties, whose gradient the
    reference splits evenly and the kernels send to the first; the sum is the same."""
    set_impl(monkeypatch, "kernels")
    ref = build("pointnet2_msg", 0.125, 0)
    fast = copy.deepcopy(ref)
    x = clouds(4, 512, 0)
    x[:, 256:] = x[:, :1]  # half of each cloud is one repeated point
    y = torch.tensor([1, 2, 3, 4])
    logits_ref = train_step(ref, x, y, "reference")
    assert_same_function(ref, fast, logits_ref, train_step(fast, x, y, "fast"))


CACHE_CHECK = """
import hashlib, torch
from pcdistill.data import builtin_dataset
from pcdistill.models import create_model
torch.manual_seed(0)
data = builtin_dataset("train", num_points=512).subset(range(4))
model = create_model("pointnet2_msg", width=0.125)
torch.nn.functional.cross_entropy(model(torch.from_numpy(data.points)),
                                  torch.from_numpy(data.labels)).backward()
print(hashlib.sha1(b"".join(p.grad.numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_kernels_compiled_here_and_loaded_from_the_cache_give_the_same_floats(tmp_path):
    """A float32 training step in a process that compiles the kernels (an empty numba
    cache) and in one that loads them from the cache it left: bit-identical gradients.
    Without force-inlining (`pcdistill.ops.jit`) they differed, so the first run on a
    machine trained other weights than every later one."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", CACHE_CHECK], env=env, capture_output=True,
                           text=True) for _ in range(2)]  # fmt: skip
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-3000:] + runs[1].stderr[-3000:]
    assert any(tmp_path.rglob("*.nbc")), "the first run did not fill the cache"
    assert runs[0].stdout == runs[1].stdout


@pytest.fixture
def two_threads():
    """Float32 rounding depends on how sums are split over threads; other tests (and the
    Trainer) change torch's thread count, so pin it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_adam_steps_in_float32_stay_close(two_threads):
    """Five Adam steps of the tiny model on real shapes in float32, against the same steps
    in float64 on the reference path (the truth). Float32 rounding, amplified by Adam's
    normalised steps, moves every float32 run away from the truth. The fast path stays
    closer to the truth than the float32 reference path at every step (measured at 2
    threads: losses 1.4e-6 vs 4.7e-3 relative; at 1 thread 4.5e-4 vs 3.4e-3, as Adam turns
    near-zero gradients into full steps), within 1e-3 (relative) of the truth's losses,
    its final logits within 1e-2 of their scale (measured: 3.6e-3) with the same predicted
    classes. The reference path's BatchNorm sums millions of grouped values per channel
    in float32; the kernels sum BatchNorm statistics in float64."""
    data = builtin_dataset("train", num_points=1024).subset(range(16))
    x, y = torch.from_numpy(data.points), torch.from_numpy(data.labels)
    torch.manual_seed(0)
    base = create_model("pointnet2_msg", width=0.125)
    runs = {"truth": (torch.float64, "reference"), "reference": (torch.float32, "reference"),
            "fast": (torch.float32, "fast")}  # fmt: skip
    losses, logits = {}, {}
    for name, (dtype, path) in runs.items():
        model = copy.deepcopy(base).to(dtype)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses[name] = []
        with use_path(path):
            for step in range(5):
                torch.manual_seed(step)
                loss = F.cross_entropy(model(x.to(dtype)), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses[name].append(loss.item())
            with torch.no_grad():
                logits[name] = model.eval()(x.to(dtype)).double()
    scale = logits["truth"].abs().max()
    error = {k: (logits[k] - logits["truth"]).abs().max() / scale for k in ("reference", "fast")}
    truth = np.array(losses["truth"])
    off = {k: np.abs(np.array(losses[k]) - truth) / truth for k in ("reference", "fast")}
    assert (off["fast"] < off["reference"]).all(), off
    assert off["fast"].max() <= 1e-3, off
    assert error["fast"] <= 1e-2
    assert error["fast"] <= error["reference"]
    assert torch.equal(logits["fast"].argmax(1), logits["truth"].argmax(1))


def test_reference_checkpoint_predicts_the_same_on_the_fast_path(tmp_path):
    """Same parameters and state-dict keys: weights trained on the reference path load
    into a fresh model and the fast path predicts the same classes on real shapes."""
    from pcdistill.engine.checkpoint import build_from_checkpoint, model_spec, save_model

    data = builtin_dataset("train", num_points=1024).subset(range(32))
    x, y = torch.from_numpy(data.points), torch.from_numpy(data.labels)
    model = create_model("pointnet2_msg", num_classes=40, width=0.125)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with use_path("reference"):
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            expected = model(x)
    spec = model_spec("pointnet2_msg", 40, 0.125)
    save_model(tmp_path / "ref.pt", model, spec, data.class_names, "fp", {})
    loaded, _ = build_from_checkpoint(tmp_path / "ref.pt")
    with torch.no_grad():
        got = loaded.eval()(x)  # the default path: fast
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_inference_folds_batchnorm_once_and_refolds_when_any_weight_changes():
    """The eval kernels keep each branch's folded chain, the torch path each wide chain's
    (the global level); an optimizer step, an in-place edit, load_state_dict or BatchNorm
    statistics updated in train mode all invalidate them, so eval outputs always equal the
    reference path's on the current weights."""
    data = builtin_dataset("train", num_points=1024).subset(range(8))
    x, y = torch.from_numpy(data.points), torch.from_numpy(data.labels)
    model = create_model("pointnet2_msg", num_classes=40, width=0.125).eval()
    other = create_model("pointnet2_msg", num_classes=40, width=0.125)

    def check() -> torch.Tensor:
        with torch.no_grad():
            got = model(x)
            with use_path("reference"):
                want = model(x)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
        return got

    first = check()
    assert torch.equal(check(), first)  # the cached fold: same answer
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    F.cross_entropy(model(x), y).backward()  # also moves the BatchNorm running statistics
    opt.step()
    model.eval()
    second = check()
    assert not torch.equal(second, first)
    with torch.no_grad():  # in-place edits of parameters and of buffers
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(-1)
    third = check()
    assert not torch.equal(third, second)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.5)
    assert not torch.equal(check(), third)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), other.eval()(x))
