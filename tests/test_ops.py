"""Point ops against plain numpy references, on both backends, on random and real clouds.

The references do the float32 arithmetic the ops promise (coordinate differences,
squared and summed in coordinate order), so indices must match exactly.
"""

import math
import multiprocessing

import h5py
import numpy as np
import pytest
import torch

from pcdistill import ops
from pcdistill.ops import backend, cpu_kernels
from pcdistill.ops.distance import square_distance

BACKENDS = ["auto", "torch"]


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    with ops.use_backend(request.param):
        yield request.param


@pytest.fixture(scope="module")
def real_clouds(modelnet40_root) -> torch.Tensor:
    """Four ModelNet40 test shapes, (4, 1024, 3) float32."""
    with h5py.File(modelnet40_root / "ply_data_test0.h5") as f:
        return torch.from_numpy(np.asarray(f["data"][:4]))


def random_clouds(batch: int, n: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, channels, generator=g) * 2 - 1


def rotation(degrees: float) -> torch.Tensor:
    """float64 rotation about an oblique axis, so every coordinate changes."""
    axis = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64) / 3
    k = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
        dtype=torch.float64,
    )
    t = math.radians(degrees)
    r = torch.eye(3, dtype=torch.float64) + math.sin(t) * k + (1 - math.cos(t)) * k @ k
    return r


# ---- plain references: one cloud, one query at a time ----------------------------------


def sq_dist(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Squared distances from q (C,) to points (N, C), summed in coordinate order."""
    diff = points - q
    d = diff[:, 0] * diff[:, 0]
    for c in range(1, points.shape[1]):
        d = d + diff[:, c] * diff[:, c]
    return d


def ref_fps(xyz: np.ndarray, m: int) -> np.ndarray:
    picked = [0]
    nearest = np.full(len(xyz), np.inf, xyz.dtype)
    for _ in range(1, m):
        nearest = np.minimum(nearest, sq_dist(xyz, xyz[picked[-1]]))
        picked.append(int(np.argmax(nearest)))  # first maximum
    return np.array(picked[:m], dtype=np.int64)


def ref_ball_query(query: np.ndarray, ref: np.ndarray, radius: float, k: int) -> np.ndarray:
    r2 = np.array(radius * radius, dtype=ref.dtype)
    out = np.zeros((len(query), k), np.int64)
    for i, q in enumerate(query):
        hits = np.flatnonzero(sq_dist(ref, q) <= r2)[:k]  # in index order
        if len(hits):
            out[i] = np.concatenate([hits, np.full(k - len(hits), hits[0])])
    return out


def ref_knn(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    return np.stack([np.argsort(sq_dist(ref, q), kind="stable")[:k] for q in query])


def batched(fn, *arrays, **kw) -> torch.Tensor:
    return torch.from_numpy(np.stack([fn(*a, **kw) for a in zip(*arrays, strict=True)]))


# ---- farthest point sampling ------------------------------------------------------------


@pytest.mark.parametrize(("batch", "n", "m"), [(1, 40, 40), (3, 200, 50), (2, 7, 1), (2, 5, 0)])
def test_fps_matches_reference_random(backend_name, batch, n, m):
    xyz = random_clouds(batch, n)
    idx = ops.farthest_point_sample(xyz, m)
    assert idx.dtype == torch.int64 and idx.shape == (batch, m)
    assert torch.equal(idx, batched(ref_fps, xyz.numpy(), m=m))


def test_fps_matches_reference_real(backend_name, real_clouds):
    idx = ops.farthest_point_sample(real_clouds, 512)
    assert torch.equal(idx, batched(ref_fps, real_clouds.numpy(), m=512))


def test_fps_takes_the_first_of_tied_farthest_points(backend_name):
    """A lattice (with every point repeated) ties the farthest distance at many indices
    per step, spread over all of the cloud's blocks: each pick must be the lowest index,
    as argmax picks, also when it falls in the cloud's last, partial block."""
    axis = torch.linspace(-1, 1, 5)
    lattice = torch.cartesian_prod(axis, axis, axis)  # 125 points
    xyz = torch.cat([lattice, lattice.flip(0)]).unsqueeze(0)  # 250: each point twice
    idx = ops.farthest_point_sample(xyz, 60)
    assert torch.equal(idx, batched(ref_fps, xyz.numpy(), m=60))


def test_fps_float64_and_grad_inputs(backend_name):
    xyz = random_clouds(2, 64).double().requires_grad_()
    idx = ops.farthest_point_sample(xyz, 16)
    assert torch.equal(idx, batched(ref_fps, xyz.detach().numpy(), m=16))


def test_fps_prefix_property(backend_name, real_clouds):
    order = ops.fps_order(real_clouds)
    assert torch.equal(order.sort(-1).values, torch.arange(1024).expand(4, -1))
    for big, m in [(512, 512), (512, 128), (1024, 100)]:
        assert torch.equal(ops.farthest_point_sample(real_clouds, m), order[:, :m])
        prefix = ops.gather(real_clouds, order[:, :big])
        assert torch.equal(ops.farthest_point_sample(prefix, m), torch.arange(m).expand(4, -1))


def test_fps_and_knn_invariant_under_similarity(backend_name, real_clouds):
    """Uniform scaling, translation and rotation keep FPS and kNN order.

    Checked in float64: in float32 their rounding swaps points whose distances agree to
    ~1e-6 relative, which on ModelNet40 changes the full FPS order of a few % of clouds,
    never in the first 400 points of the 64 test clouds we looked at.
    """
    xyz = real_clouds.double()
    order, neighbours = ops.fps_order(xyz), ops.knn(xyz, xyz, 20)
    moved = {
        "scale": xyz * 1.7,
        "translate": xyz + torch.tensor([0.3, -0.2, 0.11], dtype=torch.float64),
        "rotate": xyz @ rotation(37.0).T,
        "all": (xyz * 0.6 + 0.25) @ rotation(-113.0).T,
    }
    for name, y in moved.items():
        assert torch.equal(ops.fps_order(y), order), name
        assert torch.equal(ops.knn(y, y, 20), neighbours), name


def test_anisotropic_scaling_breaks_fps_order(backend_name, real_clouds):
    squashed = real_clouds * torch.tensor([1.0, 1.0, 0.3])
    changed = ops.farthest_point_sample(squashed, 512) != ops.fps_order(real_clouds)[:, :512]
    assert changed.any(-1).all()


def test_fps_bad_input():
    with pytest.raises(ValueError, match="cannot sample"):
        ops.farthest_point_sample(random_clouds(1, 10), 11)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        ops.farthest_point_sample(torch.zeros(10, 3), 2)


# ---- ball query ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "m", "n", "radius", "k"),
    [
        (1, 20, 60, 0.3, 8),
        (3, 16, 100, 0.5, 32),  # k above most counts: padding with the first hit
        (2, 10, 12, 2.0, 20),  # k > N
        (2, 10, 50, 4.0, 50),  # every point inside
    ],
)
def test_ball_query_matches_reference_random(backend_name, batch, m, n, radius, k):
    ref = random_clouds(batch, n)
    query = ref[:, :m]
    idx = ops.ball_query(query, ref, radius, k)
    assert idx.dtype == torch.int64 and idx.shape == (batch, m, k)
    assert torch.equal(idx, batched(ref_ball_query, query.numpy(), ref.numpy(), radius=radius, k=k))


def test_ball_query_matches_reference_real(backend_name, real_clouds):
    """PointNet++ MSG: level 1 (512 centres of 1024 points) and level 2 (128 of 512)."""
    c1 = ops.gather(real_clouds, ops.farthest_point_sample(real_clouds, 512))
    c2 = ops.gather(c1, ops.farthest_point_sample(c1, 128))
    levels = [(c1, real_clouds, [(0.1, 16), (0.2, 32), (0.4, 128)]),
              (c2, c1, [(0.2, 32), (0.4, 64), (0.8, 128)])]  # fmt: skip
    for query, ref, branches in levels:
        together = ops.ball_queries(query, ref, *zip(*branches, strict=True))
        for (radius, k), idx in zip(branches, together, strict=True):
            expected = batched(ref_ball_query, query.numpy(), ref.numpy(), radius=radius, k=k)
            assert torch.equal(ops.ball_query(query, ref, radius, k), expected), (radius, k)
            assert torch.equal(idx, expected), ("ball_queries", radius, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ball_queries_in_any_radius_order(backend_name, dtype):
    """Several radii in no particular order, one ball filling up (k reached) and one
    mostly padded: each equals its own single-radius reference (the CPU kernel scans
    only the points inside the largest ball, so this holds it to every radius)."""
    ref = random_clouds(2, 300, seed=3).to(dtype)
    query = ref[:, :40]
    radii, ks = (0.5, 0.1, 0.3), (4, 20, 8)
    together = ops.ball_queries(query, ref, radii, ks)
    for radius, k, idx in zip(radii, ks, together, strict=True):
        expected = batched(ref_ball_query, query.numpy(), ref.numpy(), radius=radius, k=k)
        assert torch.equal(idx, expected), (radius, k)


def test_ball_query_boundary_and_empty_ball(backend_name):
    ref = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [0.25, 0, 0], [9, 9, 9], [0.3, 0, 0]]])
    query = torch.tensor([[[0.0, 0, 0], [5.0, 5, 5]]])
    idx = ops.ball_query(query, ref, 0.5, 5)  # 0.5 away is inside; the far query finds nothing
    assert idx.tolist() == [[[0, 1, 2, 4, 0], [0, 0, 0, 0, 0]]]
    # float32(0.3**2) rounds up: the comparison is in float32, as in the reference
    expected = batched(ref_ball_query, query.numpy(), ref.numpy(), radius=0.3, k=5)
    assert torch.equal(ops.ball_query(query, ref, 0.3, 5), expected)


def test_ball_query_bad_input():
    x = random_clouds(1, 10)
    with pytest.raises(ValueError, match="radius"):
        ops.ball_query(x, x, 0.0, 4)
    with pytest.raises(ValueError, match="differ"):
        ops.ball_query(x, random_clouds(2, 10), 0.1, 4)
    with pytest.raises(ValueError, match="radius"):
        ops.ball_queries(x, x, (0.1, -1.0), (4, 4))
    with pytest.raises(ValueError, match="2 radii but 1"):
        ops.ball_queries(x, x, (0.1, 0.2), (4,))


# ---- kNN ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "m", "n", "k"), [(1, 30, 30, 30), (3, 40, 100, 20), (2, 5, 9, 1)]
)
def test_knn_matches_reference_random(backend_name, batch, m, n, k):
    ref = random_clouds(batch, n)
    query = random_clouds(batch, m, seed=1)
    idx = ops.knn(query, ref, k)
    assert idx.dtype == torch.int64 and idx.shape == (batch, m, k)
    assert torch.equal(idx, batched(ref_knn, query.numpy(), ref.numpy(), k=k))


def test_knn_matches_reference_real(backend_name, real_clouds):
    """DGCNN (every point, k = 20) and PointMLP (512 anchors, k = 24) on coordinates."""
    anchors = ops.gather(real_clouds, ops.farthest_point_sample(real_clouds, 512))
    for query, k in [(real_clouds, 20), (anchors, 24)]:
        expected = batched(ref_knn, query.numpy(), real_clouds.numpy(), k=k)
        assert torch.equal(ops.knn(query, real_clouds, k), expected)


def test_knn_features_64d(backend_name):
    """Wide features use the matmul form, whose rounding may reorder near-equal distances:
    compare the distances (in float64) of the chosen neighbours with the true k smallest."""
    x = random_clouds(2, 300, channels=64)
    idx = ops.knn(x, x, 20)
    assert torch.equal(idx[..., 0], torch.arange(300).expand(2, -1))  # itself first
    x64 = x.double()
    d = ((x64.unsqueeze(2) - x64.unsqueeze(1)) ** 2).sum(-1)
    assert torch.allclose(d.gather(-1, idx), d.sort(-1).values[..., :20], rtol=1e-5, atol=1e-5)


def test_knn_features_backends_agree_except_ties():
    """Both backends select from the same matmul distances; they may only order exact ties
    differently (torch.topk promises no order among equal values)."""
    x = random_clouds(2, 500, channels=64).requires_grad_()  # DGCNN passes features with grad
    fast = ops.knn(x, x, 20)
    with ops.use_backend("torch"):
        plain = ops.knn(x, x, 20)
    assert not fast.requires_grad and not plain.requires_grad
    d = square_distance(x.detach(), x.detach())
    assert torch.equal(d.gather(-1, fast), d.gather(-1, plain))


def test_knn_bad_k():
    x = random_clouds(1, 10)
    with pytest.raises(ValueError, match="k must be"):
        ops.knn(x, x, 11)
    with pytest.raises(ValueError, match="k must be"):
        ops.knn(x, x, 0)


# ---- gather -------------------------------------------------------------------------


def test_gather_values_and_gradient():
    x = torch.randn(3, 10, 5, requires_grad=True)
    idx = torch.randint(0, 10, (3, 4, 6))
    out = ops.gather(x, idx)
    expected = torch.stack([x[b][idx[b]] for b in range(3)])
    assert out.shape == (3, 4, 6, 5) and torch.equal(out, expected)
    out.sum().backward()
    counts = torch.stack([torch.bincount(idx[b].flatten(), minlength=10) for b in range(3)])
    assert torch.equal(x.grad, counts.unsqueeze(-1).expand(-1, -1, 5).float())


# ---- backend selection and tracing ----------------------------------------------------


def test_auto_uses_cpu_kernels_and_torch_forces_plain(monkeypatch):
    calls = []
    kernel = cpu_kernels.farthest_point_sample

    def spy(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(cpu_kernels, "farthest_point_sample", spy)
    xyz = random_clouds(2, 32)
    ops.farthest_point_sample(xyz, 8)
    assert calls == [1]
    with ops.use_backend("torch"):
        assert ops.get_backend() == "torch"
        ops.farthest_point_sample(xyz, 8)
    assert calls == [1] and ops.get_backend() == "auto"
    ops.farthest_point_sample(xyz.half(), 8)  # no kernel for half: plain torch
    assert calls == [1]
    with pytest.raises(ValueError, match="unknown point-ops backend"):
        ops.set_backend("cuda")


def pipeline(xyz: torch.Tensor) -> torch.Tensor:
    """A small PointNet++/PointMLP-style grouping, as a model would trace it."""
    centres = ops.gather(xyz, ops.farthest_point_sample(xyz, 16))
    balls = ops.gather(xyz, ops.ball_query(centres, xyz, 0.5, 8))
    near = ops.gather(xyz, ops.knn(centres, xyz, 4))
    return torch.cat([balls, near], dim=2) - centres.unsqueeze(2)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape checks become constants
def test_torch_path_traces_and_tracing_avoids_kernels(monkeypatch):
    def no_kernels(*args):
        raise AssertionError("CPU kernel called while tracing")

    for name in ["farthest_point_sample", "ball_query", "knn"]:
        monkeypatch.setattr(cpu_kernels, name, no_kernels)
    traced = torch.jit.trace(pipeline, random_clouds(2, 64, seed=3), check_trace=False)
    monkeypatch.undo()
    assert not backend.building_graph()
    other = random_clouds(2, 64, seed=4)  # a new cloud: the indices were not baked in
    assert torch.equal(traced(other), pipeline(other))


def _fps_in_child(xyz: torch.Tensor, expected: torch.Tensor) -> None:
    torch.set_num_threads(2)  # use the thread pool, as the parent did
    assert torch.equal(ops.farthest_point_sample(xyz, 16), expected)


def test_cpu_kernels_work_in_a_forked_child():
    """A DataLoader worker forks after the parent ran the kernels; it must not hang or abort."""
    xyz = random_clouds(8, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = ops.farthest_point_sample(xyz, 16)  # starts the parent's pool
    finally:
        torch.set_num_threads(threads)
    child = multiprocessing.get_context("fork").Process(target=_fps_in_child, args=(xyz, expected))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


class Pipeline(torch.nn.Module):
    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return pipeline(xyz)


def test_torch_export_uses_torch_path(monkeypatch):
    """torch.export (the road to ONNX) must record torch ops, not call the kernels."""

    def no_kernels(*args):
        raise AssertionError("CPU kernel called while exporting")

    for name in ["farthest_point_sample", "ball_query", "knn"]:
        monkeypatch.setattr(cpu_kernels, name, no_kernels)
    exported = torch.export.export(Pipeline(), (random_clouds(2, 64, seed=3),))
    monkeypatch.undo()
    other = random_clouds(2, 64, seed=4)
    assert torch.equal(exported.module()(other), pipeline(other))
