"""Where the exported tiny model's onnxruntime time goes that no weight or width changes:
its first level's FPS and ball queries, each timed alone as the exporter writes them, and
what is left without them.

The tiny model (PointNet++ MSG x1/8) samples 512 of 1,024 points by FPS, a Loop of 511
dependent steps, then ball-queries (0.1, 16), (0.2, 32), (0.4, 128) around them; every
later level takes an FPS prefix and 128 centroids. Both parts are timed here on real
built-in test clouds at batch 1, beside the whole exported graph; the ball queries both as
exported (a compaction: running count + NonZero, `deploy/onnx_index_ops.py`) and as the
torch path's top-k over index keys traces, all checked to give the kernels' indices.

Two more rows give the figure for the other way to deploy: the same model exported with
its FPS and ball-query indices as graph inputs (only the dense part in onnxruntime),
and the CPU kernels that would compute those indices beside it (FPS and both levels'
ball queries); its logits are checked against the whole exported graph's.

    .venv/bin/python benchmarks/onnx_floor.py [--threads 1] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from train_step import emit, header

HEADING = "## The exported tiny model under onnxruntime: its index ops vs its dense part (issue 11)"
N, M, RADII, KS = 1024, 512, (0.1, 0.2, 0.4), (16, 32, 128)


class _Balls(torch.nn.Module):
    """The first level's three ball queries from coordinates; `by_keys` skips the export's
    placeholder and traces the torch path's top-k over index keys as it is."""

    def __init__(self, by_keys: bool) -> None:
        super().__init__()
        self.by_keys = by_keys

    def forward(self, query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        from pcdistill.ops.distance import square_distance
        from pcdistill.ops.neighbors import _ball_by_keys, _balls_torch

        d2 = square_distance(query, ref)
        if self.by_keys:
            return torch.cat(
                [_ball_by_keys(d2, r, k) for r, k in zip(RADII, KS, strict=True)], dim=-1
            )
        return torch.cat(_balls_torch(d2, RADII, KS), dim=-1)


class _IndicesIn(torch.nn.Module):
    """The model with its first FPS and every level's ball queries taken from inputs
    (in the order the forward asks for them), so a trace holds only the dense part."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, points: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
        import pcdistill.models.pointnet2 as pn2

        given = list(indices)
        sample, balls = pn2.sample_centroids, pn2.ball_queries

        def centroids(xyz: torch.Tensor, m: int, prefix: bool) -> torch.Tensor:
            return sample(xyz, m, True) if prefix else given.pop(0)  # later levels: a prefix

        pn2.sample_centroids = centroids
        pn2.ball_queries = lambda query, ref, radii, ks: [given.pop(0) for _ in ks]
        try:
            return self.model(points)
        finally:
            pn2.sample_centroids, pn2.ball_queries = sample, balls


def _kernel_indices(cloud: torch.Tensor) -> list[torch.Tensor]:
    """The tiny model's FPS and ball-query indices from the CPU kernels, in forward order."""
    from pcdistill.models.pointnet2 import MSG_LEVELS
    from pcdistill.ops import ball_queries, farthest_point_sample, gather

    first, second = MSG_LEVELS[0], MSG_LEVELS[1]
    fps = farthest_point_sample(cloud, first.npoint)
    centroids = gather(cloud, fps)
    inner = centroids[:, : second.npoint]  # later levels take the FPS prefix
    return [fps, *ball_queries(centroids, cloud, first.radii, first.nsamples),
            *ball_queries(inner, centroids, second.radii, second.nsamples)]  # fmt: skip


def _fps_graph() -> bytes:
    from pcdistill.deploy.onnx_index_ops import _fps_nodes

    graph = helper.make_graph(
        _fps_nodes("xyz", "idx", M, "fps/"), "fps",
        [helper.make_tensor_value_info("xyz", TensorProto.FLOAT, ["B", N, 3])],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["B", M])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clouds", type=int, default=8, help="built-in test clouds, one at a time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", help="replace this benchmark's section of a Markdown file")
    args = parser.parse_args()

    import onnxruntime as ort

    from pcdistill.data import builtin_dataset
    from pcdistill.deploy.export import trace_to_onnx
    from pcdistill.deploy.onnx_index_ops import expand_placeholders
    from pcdistill.deploy.profile import _zoo_checkpoint
    from pcdistill.engine.checkpoint import build_from_checkpoint
    from pcdistill.ops import ball_queries, farthest_point_sample, gather, use_backend

    load_start = os.getloadavg()
    clouds = builtin_dataset("test", num_points=N).points[: args.clouds].astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    opts.log_severity_level = 3

    def session(model) -> ort.InferenceSession:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _zoo_checkpoint(Path(tmp) / "tiny.pt", "pointnet2_msg", 0.125, N)
        model, _ = build_from_checkpoint(ckpt)
        trace_to_onnx(model, torch.from_numpy(clouds[:2]), Path(tmp) / "tiny.onnx")
        q, r = torch.zeros(1, M, 3), torch.zeros(1, N, 3)
        paths = {"as exported": Path(tmp) / "balls.onnx", "top-k": Path(tmp) / "keys.onnx"}
        for how, path in paths.items():
            with use_backend("torch"), torch.no_grad():
                torch.onnx.export(_Balls(by_keys=how == "top-k"), (q, r), str(path), dynamo=False,
                                  input_names=["query", "ref"], opset_version=17)  # fmt: skip
            graph = onnx.load(str(path))
            expand_placeholders(graph)
            onnx.save(graph, str(path))
        whole = session(str(Path(tmp) / "tiny.onnx"))
        example = torch.from_numpy(clouds[:2])
        inputs = _kernel_indices(example)
        names = ["points", *(f"idx{i}" for i in range(len(inputs)))]
        with use_backend("torch"), torch.no_grad():
            torch.onnx.export(_IndicesIn(model.eval()), (example, *inputs),
                              str(Path(tmp) / "dense.onnx"), dynamo=False,
                              input_names=names, output_names=["logits"],
                              dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]},
                              opset_version=17)  # fmt: skip
        dense = session(str(Path(tmp) / "dense.onnx"))
        balls = {k: session(str(p)) for k, p in paths.items()}
    fps = session(_fps_graph())

    times: dict[str, list[float]] = {}

    def timed(name: str, s, feed: dict) -> list:
        out = s.run(None, feed)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            s.run(None, feed)
            times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    for cloud in clouds:
        x = torch.from_numpy(cloud[None])
        centroids = gather(x, farthest_point_sample(x, M))
        expected = ball_queries(centroids, x, RADII, KS)
        logits = timed("whole exported graph", whole, {whole.get_inputs()[0].name: cloud[None]})[0]
        for _ in range(args.repeats + 1):  # the first call unrecorded, as `timed` warms up
            t0 = time.perf_counter()
            indices = _kernel_indices(x)
            times.setdefault("CPU kernels: FPS + both levels' ball queries", []).append(
                time.perf_counter() - t0)  # fmt: skip
        times["CPU kernels: FPS + both levels' ball queries"].pop(-args.repeats - 1)
        feed = {"points": cloud[None], **{f"idx{i}": t.numpy() for i, t in enumerate(indices)}}
        got = timed("dense part only (indices as inputs)", dense, feed)[0]
        ok_dense = np.abs(got - logits).max() <= 1e-4 * max(1.0, np.abs(logits).max())
        picks = timed(f"FPS Loop ({N} -> {M} points)", fps, {"xyz": cloud[None]})[0]
        ok = np.array_equal(picks[0], farthest_point_sample(x, M)[0].numpy())
        for how, s in balls.items():
            feed = {s.get_inputs()[0].name: centroids.numpy(), s.get_inputs()[1].name: cloud[None]}
            got = timed(f"ball queries, 3 radii ({how})", s, feed)[0]
            ok &= np.array_equal(got[0], torch.cat(expected, dim=-1)[0].numpy())
        if not ok:
            raise SystemExit("an ONNX part disagrees with the reference indices")
        if not ok_dense:
            raise SystemExit("the dense-part graph disagrees with the whole exported graph")

    lines = [
        *header(HEADING, "onnx_floor.py", args, "onnxruntime intra-op threads", load_start),
        f"- Batch 1, {args.clouds} built-in test clouds in turn, {args.repeats} timed calls each "
        "after a warm-up; every part's indices checked equal to the CPU kernels'.",
        "",
        "| part | min ms | median ms |",
        "| --- | ---: | ---: |",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {min(ts) * 1e3:.2f} | {np.median(ts) * 1e3:.2f} |")
    floor = min(times[f"FPS Loop ({N} -> {M} points)"]) + min(
        times["ball queries, 3 radii (as exported)"]
    )
    outside = min(times["dense part only (indices as inputs)"]) + min(
        times["CPU kernels: FPS + both levels' ball queries"]
    )
    lines += ["", f"FPS + ball queries alone (minima): {floor * 1e3:.2f} ms.",
              f"Dense part in onnxruntime + index ops on the CPU kernels (minima): "
              f"{outside * 1e3:.2f} ms.", ""]  # fmt: skip
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
