"""ONNX export: the whole classifier (sampling and grouping too) matches PyTorch on real
shapes at any batch size, and a bad checkpoint or a failed parity check leaves no file."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pcdistill.cli import main
from pcdistill.data import builtin_dataset
from pcdistill.data.preprocess import input_recipe
from pcdistill.deploy.export import export_onnx, ort_session, read_metadata, run_onnx, run_torch
from pcdistill.engine.checkpoint import build_from_checkpoint, model_spec, save_model
from pcdistill.engine.config import RunConfig
from pcdistill.errors import ModelError
from pcdistill.models import create_model

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def write_checkpoint(path: Path, name: str, width: float, num_points: int, **data) -> Path:
    """A random-weight checkpoint whose BatchNorm statistics come from real training shapes,
    so activations and logits have the spread of a trained model's, not all one class."""
    cfg = RunConfig().model_dump(mode="json")
    cfg["data"].update(num_points=num_points, **data)
    train = builtin_dataset("train", num_points=num_points)
    model = create_model(name, num_classes=len(train.class_names), width=width)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(train.points[::10]))
    spec = model_spec(name, len(train.class_names), width)
    recipe = input_recipe(cfg["data"]["normalize"], train.points)  # as the trainer records
    save_model(path, model, spec, list(train.class_names), train.fingerprint(), cfg, recipe)
    return path


@pytest.mark.parametrize(
    ("name", "width", "num_points"),
    [("pointnet2_msg", 0.125, 1024), ("pointnet2_ssg", 0.25, 512), ("dgcnn", 0.25, 256)],
)
def test_export_matches_pytorch_at_any_batch_size(tmp_path, name, width, num_points):
    ckpt = write_checkpoint(tmp_path / "model.pt", name, width, num_points)
    out = tmp_path / "model.onnx"
    parity = export_onnx(ckpt, out, samples=16)
    assert parity.samples == 16 and parity.agreement == 1.0
    # PyTorch runs the fused CPU kernels, the graph the torch rewrite: same function, other
    # float32 rounding. PointNet++ groups by coordinates (identical indices), so logits
    # agree to rounding; DGCNN's kNN in feature space can swap neighbours at near-ties
    # (one swap moved these logits by 1.2e-3, against 3e-6 without one).
    tolerance = 1e-2 if name == "dgcnn" else 1e-5
    assert parity.max_abs_diff <= tolerance * max(1.0, parity.logit_scale)
    assert parity.logit_scale > 0.05  # real logits, not a constant output

    if name.startswith("pointnet2"):  # FPS is one Loop node, not one block per sample
        graph = onnx.load(str(out)).graph
        # the first level's FPS; the second level's centroids are a prefix of its output
        assert [n.op_type for n in graph.node].count("Loop") == 1
        assert len(graph.node) < 2000 and out.stat().st_size < 2**20

    meta = read_metadata(out)
    assert meta["num_points"] == num_points and len(meta["class_names"]) == 40
    model, _ = build_from_checkpoint(ckpt)
    session = ort_session(out)
    points = builtin_dataset("test", num_points=num_points).points
    for batch in (points[5:6], points[40:43]):  # traced at batch 2: both must work
        np.testing.assert_allclose(run_onnx(session, batch), run_torch(model, batch), atol=1e-4)


def test_failed_parity_raises_and_leaves_no_file(tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "model.pt", "dgcnn", 0.125, 256)
    out = tmp_path / "out" / "model.onnx"
    monkeypatch.setattr(
        "pcdistill.deploy.export.run_torch", lambda model, points, batch_size=16: np.zeros((2, 40))
    )
    with pytest.raises(ModelError, match="does not match PyTorch"):
        export_onnx(ckpt, out, samples=2)
    assert list(out.parent.iterdir()) == []


def test_missing_or_corrupt_checkpoint_gives_one_clear_error(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="checkpoint not found"):
        export_onnx(tmp_path / "nowhere.pt", out)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert main(["export", str(corrupt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcdistill: error: checkpoint") and str(corrupt) in err
    assert "\n" not in err and not out.exists()


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears if the load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("command", ["eval", "export", "predict", "train"])
def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, capsys, command):
    """A .pt whose pickle names a callable: every command that reads a checkpoint refuses
    it with one line, and the callable never runs (weights-only loading)."""
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "last.pt"  # a run folder's checkpoint, for --resume
    torch.save({"format": "pcdistill-checkpoint", "version": 1, "x": _Payload(marker)}, crafted)
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, builtin_dataset("test", num_points=64).points[0])
    cfg = RunConfig(out=str(tmp_path)).model_dump(mode="json")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    argv = {
        "eval": ["eval", str(crafted)],
        "export": ["export", str(crafted), "--out", str(tmp_path / "m.onnx")],
        "predict": ["predict", "--model", str(crafted), str(cloud)],
        "train": ["train", "--resume", str(crafted.parent)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "refused without unpickling" in err and str(crafted) in err and "\n" not in err
    assert not marker.exists()


def test_export_and_quantize_never_write_over_their_input_or_another_kind(tmp_path, capsys):
    """`export CKPT --out CKPT` used to replace the checkpoint with the graph: refused before
    any work, as are a folder and an existing file that is not an .onnx graph."""
    ckpt = tmp_path / "model.pt"
    spec = model_spec("pointnet", 40, 0.125)
    cfg = RunConfig().model_dump(mode="json")
    names = list(builtin_dataset("test").class_names)
    save_model(ckpt, create_model("pointnet", width=0.125), spec, names, "", cfg)
    before = ckpt.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    graph = tmp_path / "old.onnx"
    graph.write_bytes(b"an earlier graph")
    for command in ("export", "quantize"):
        for out, needle in ((ckpt, "is the input checkpoint"), (tmp_path, "is a folder"),
                            (notes, "is not an .onnx file"),
                            (graph, "already exists; pass --force")):  # fmt: skip
            assert main([command, str(ckpt), "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert needle in err and "\n" not in err, (command, err)
        for out in (ckpt, tmp_path):  # never, even with --force
            assert main([command, str(ckpt), "--out", str(out), "--force"]) == 2
            capsys.readouterr()
    assert ckpt.read_bytes() == before and notes.read_text() == "keep me"
    assert graph.read_bytes() == b"an earlier graph"
    assert main(["export", str(ckpt), "--out", str(graph), "--force"]) == 0  # one rule: --force
    assert graph.read_bytes()[:2] != b"an"


class _Sampling(torch.nn.Module):
    """FPS to m points, then ball queries around them: the index ops of a PointNet++ level."""

    def __init__(self, m: int, radii: tuple[float, ...], ks: tuple[int, ...]) -> None:
        super().__init__()
        self.m, self.radii, self.ks = m, radii, ks

    def forward(self, xyz):
        from pcdistill.ops import ball_queries, farthest_point_sample

        idx = farthest_point_sample(xyz, self.m)
        centroids = xyz.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3))
        return idx, *ball_queries(centroids, xyz, self.radii, self.ks)


class _Balls(torch.nn.Module):
    def forward(self, query, ref):
        from pcdistill.ops import ball_queries

        return tuple(ball_queries(query, ref, (0.3, 0.3, 1.0), (8, 64, 200)))


def test_exported_wide_ball_query_is_a_compaction_with_the_reference_indices(tmp_path):
    """Balls of k >= 64 export as the cumsum + NonZero compaction, narrower ones as a
    top-k: both give the kernels' indices for empty, partial and overfull balls."""
    from pcdistill.deploy.export import OPSET
    from pcdistill.deploy.onnx_index_ops import expand_placeholders
    from pcdistill.ops import use_backend

    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, (2, 150, 3)).astype(np.float32)
    query = np.concatenate([ref[:, :20], ref[:, :5] + 10], axis=1)  # 5 empty balls each
    path = tmp_path / "balls.onnx"
    example = tuple(torch.from_numpy(a) for a in (query, ref))
    with use_backend("torch"), torch.no_grad():
        torch.onnx.export(_Balls(), example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=["query", "ref"])  # fmt: skip
    graph = onnx.load(str(path))
    assert expand_placeholders(graph) == 2  # k = 64 and 200; k = 8 stays a top-k
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("NonZero") == 2 and ops.count("TopK") == 1
    onnx.save(graph, str(path))
    got = ort_session(path).run(None, {"query": query, "ref": ref})
    want = _Balls()(*example)  # CPU: the numba kernels
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())
    assert (want[1][:, 20:] == 0).all() and (want[2][:, :20] != want[2][:, :1]).any()


@pytest.mark.parametrize(("n", "m"), [(64, 1), (64, 64), (300, 37)])
def test_exported_fps_and_ball_query_give_the_reference_indices(tmp_path, n, m):
    """The hand-written FPS Loop and the float-keyed ball query in the graph return exactly
    the indices of the numba kernels, ties included (repeated points), at batch 1 and 3,
    with empty, partial and overfull balls."""
    from pcdistill.deploy.export import trace_to_onnx

    rng = np.random.default_rng(n + m)
    xyz = rng.standard_normal((3, n, 3)).astype(np.float32)
    xyz[:, n // 2 :] = xyz[:, : n - n // 2]  # every point twice: ties in FPS and in balls
    xyz[1] *= 40  # far apart: balls of one point
    module = _Sampling(m, (0.05, 0.5, 3.0), (4, 16, n + 5))
    path = tmp_path / "sampling.onnx"
    trace_to_onnx(module, torch.from_numpy(xyz[:2]), path)
    graph = onnx.load(str(path))
    assert [node.op_type for node in graph.graph.node].count("Loop") == (m > 1)
    assert all(op.domain in ("", "ai.onnx") for op in graph.opset_import)  # no placeholder left
    session = ort_session(path)
    for batch in (xyz[:1], xyz):
        got = session.run(None, {session.get_inputs()[0].name: batch})
        want = module(torch.from_numpy(batch))  # CPU: the numba kernels
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w.numpy())


def test_run_torch_predicts_in_eval_mode_when_only_a_submodule_trains():
    """run_torch skips model.eval() when nothing trains; a module left in training mode
    under an eval-mode root (here the head, whose dropout would change the logits) still
    puts the whole model in eval mode."""
    torch.manual_seed(0)
    model = create_model("pointnet2_msg", width=0.125).eval()
    points = builtin_dataset("test").points[:2]
    with torch.no_grad():
        expected = model(torch.from_numpy(points)).numpy()
    model.head.train()
    assert not model.training
    np.testing.assert_array_equal(run_torch(model, points), expected)
    assert not any(m.training for m in model.modules())
