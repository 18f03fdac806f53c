"""Where the exported tiny model's onnxruntime time goes that no weight or width changes:
its first level's FPS and ball queries, each timed alone as the exporter writes them.

The tiny model (PointNet++ MSG x1/8) samples 512 of 1,024 points by FPS, a Loop of 511
dependent steps, then ball-queries (0.1, 16), (0.2, 32), (0.4, 128) around them; every
later level takes an FPS prefix and 128 centroids. Both parts are timed here on real
built-in test clouds at batch 1, beside the whole exported graph; the ball queries both as
exported (a compaction: running count + NonZero, `deploy/onnx_index_ops.py`) and as the
torch path's top-k over index keys traces, all checked to give the kernels' indices.

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

HEADING = (
    "## The exported tiny model's floor under onnxruntime: FPS and ball queries alone (issue 11)"
)
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
        timed("whole exported graph", whole, {whole.get_inputs()[0].name: cloud[None]})
        picks = timed(f"FPS Loop ({N} -> {M} points)", fps, {"xyz": cloud[None]})[0]
        ok = np.array_equal(picks[0], farthest_point_sample(x, M)[0].numpy())
        for how, s in balls.items():
            feed = {s.get_inputs()[0].name: centroids.numpy(), s.get_inputs()[1].name: cloud[None]}
            got = timed(f"ball queries, 3 radii ({how})", s, feed)[0]
            ok &= np.array_equal(got[0], torch.cat(expected, dim=-1)[0].numpy())
        if not ok:
            raise SystemExit("an ONNX part disagrees with the reference indices")

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
    lines += ["", f"FPS + ball queries alone (minima): {floor * 1e3:.2f} ms.", ""]
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
