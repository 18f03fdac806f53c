"""The index ops of PointNet++ in an exported graph, written by hand in standard ONNX.

The tracer cannot export a loop, and a traced top-k is slow in onnxruntime, so during
export the ops emit placeholder nodes (domain `pcdistill`) and `expand_placeholders`
replaces each by standard ops:

- `FarthestPointSample` (xyz (B, N, 3), attribute m) becomes one Loop. Each step is 8
  nodes on a (3, B, N) layout: gather the last pick, squared distance to every point
  summed coordinate by coordinate (the arithmetic of `_fps_loop`, so the indices are
  the same), running minimum, first argmax. onnxruntime spends most of an FPS step on
  per-node overhead, and the TorchScript loop this replaced took ~40 nodes per step.
- `BallQuery` (squared distances (B, M, N), attributes r2, k) becomes a compaction: a
  running count of the points inside the ball gives each its rank, NonZero lists the
  first k of every row in index order, and a gather lays them out k per row (empty
  slots repeat the first point, an empty ball is all 0, as `ball_query` promises).
  The torch path's top-k over index keys gives the same indices and stays for narrow
  balls (`ops.neighbors.EXPORT_COMPACT_MIN_K`); for wide ones onnxruntime ran this
  faster (`benchmarks/onnx_floor.py`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "pcdistill"


def expand_placeholders(model: onnx.ModelProto) -> int:
    """Replace every placeholder in `model`'s main graph in place; returns how many."""
    graph = model.graph
    nodes = list(graph.node)
    count = 0
    del graph.node[:]
    for node in nodes:
        if node.domain != DOMAIN:
            graph.node.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        p = f"{node.op_type.lower()}{count}/"
        if node.op_type == "FarthestPointSample":
            graph.node.extend(_fps_nodes(node.input[0], node.output[0], attrs["m"], p))
        elif node.op_type == "BallQuery":
            r2, k = attrs["r2"], attrs["k"]
            graph.node.extend(_ball_nodes(node.input[0], node.output[0], r2, k, p))
        else:
            raise ValueError(f"unknown placeholder {DOMAIN}::{node.op_type}")
        count += 1
    kept = [op for op in model.opset_import if op.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)
    )


def _fps_nodes(xyz: str, out: str, m: int, p: str) -> list[onnx.NodeProto]:
    """Nodes computing FPS indices `out` (B, m) int64 of `xyz` (B, N, 3), names prefixed `p`."""
    if m < 1:
        raise ValueError(f"FPS export needs m >= 1, got {m}")
    n = helper.make_node
    body = helper.make_graph(
        [
            _const(p + "axis0", np.array([0], np.int64)),
            n("Add", [p + "last", p + "offset"], [p + "flat_idx"]),  # (B, 1) into B*N
            n("Gather", [p + "flat3", p + "flat_idx"], [p + "picked"], axis=1),  # (3, B, 1)
            n("Sub", [p + "xyz3", p + "picked"], [p + "diff"]),
            n("Mul", [p + "diff", p + "diff"], [p + "sq"]),
            n("ReduceSum", [p + "sq", p + "axis0"], [p + "dist"], keepdims=0),  # (B, N)
            n("Min", [p + "nearest", p + "dist"], [p + "nearest_out"]),
            n("ArgMax", [p + "nearest_out"], [p + "last_out"], axis=1, keepdims=1),
            n("Identity", [p + "cond"], [p + "cond_out"]),
            n("Identity", [p + "last_out"], [p + "pick"]),
        ],
        p + "step",
        [
            helper.make_tensor_value_info(p + "i", TensorProto.INT64, []),
            helper.make_tensor_value_info(p + "cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info(p + "nearest", TensorProto.FLOAT, None),
            helper.make_tensor_value_info(p + "last", TensorProto.INT64, None),
        ],
        [
            helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info(p + "nearest_out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info(p + "last_out", TensorProto.INT64, None),
            helper.make_tensor_value_info(p + "pick", TensorProto.INT64, None),
        ],
    )
    shape = [
        n("Shape", [xyz], [p + "shape"]),
        _const(p + "i0", np.array([0], np.int64)),
        _const(p + "i1", np.array([1], np.int64)),
        _const(p + "i2", np.array([2], np.int64)),
        n("Slice", [p + "shape", p + "i0", p + "i1"], [p + "b"]),
        n("Concat", [p + "b", p + "i1"], [p + "b_1"], axis=0),
        _const(p + "zero", np.array(0, np.int64)),
    ]
    if m == 1:  # no step to loop over (onnxruntime cannot shape an empty Loop output)
        return [*shape, n("Expand", [p + "zero", p + "b_1"], [out])]
    return [
        *shape,
        n("Transpose", [xyz], [p + "xyz3"], perm=[2, 0, 1]),  # (3, B, N)
        _const(p + "3_m1", np.array([3, -1], np.int64)),
        n("Reshape", [p + "xyz3", p + "3_m1"], [p + "flat3"]),  # (3, B*N)
        n("Slice", [p + "shape", p + "i0", p + "i2"], [p + "b_n"]),
        n("Slice", [p + "shape", p + "i1", p + "i2"], [p + "n"]),
        _const(p + "one", np.array(1, np.int64)),
        n("Squeeze", [p + "b", p + "i0"], [p + "b_scalar"]),
        n("Range", [p + "zero", p + "b_scalar", p + "one"], [p + "rows"]),
        n("Mul", [p + "rows", p + "n"], [p + "row_start"]),
        n("Unsqueeze", [p + "row_start", p + "i1"], [p + "offset"]),  # (B, 1)
        _const(p + "inf", np.array(np.inf, np.float32)),
        n("Expand", [p + "inf", p + "b_n"], [p + "nearest0"]),
        n("Expand", [p + "zero", p + "b_1"], [p + "first"]),  # FPS starts at index 0
        _const(p + "steps", np.array(m - 1, np.int64)),
        _const(p + "true", np.array(True)),
        n(
            "Loop",
            [p + "steps", p + "true", p + "nearest0", p + "first"],
            [p + "nearest_f", p + "last_f", p + "picks"],
            body=body,
        ),
        n("Squeeze", [p + "picks", p + "i2"], [p + "picks2"]),  # (m - 1, B)
        n("Transpose", [p + "picks2"], [p + "picks_t"], perm=[1, 0]),
        n("Concat", [p + "first", p + "picks_t"], [out], axis=1),
    ]


def _ball_nodes(d2: str, out: str, r2: float, k: int, p: str) -> list[onnx.NodeProto]:
    """Nodes computing ball-query indices `out` (B, M, k) int64 from squared distances
    `d2` (B, M, N) float32, names prefixed `p`."""
    n = helper.make_node
    return [
        n("Shape", [d2], [p + "shape"]),
        _const(p + "i0", np.array([0], np.int64)),
        _const(p + "i1", np.array([1], np.int64)),
        _const(p + "i2", np.array([2], np.int64)),
        _const(p + "i3", np.array([3], np.int64)),
        _const(p + "m1", np.array([-1], np.int64)),
        _const(p + "end", np.array([2**62], np.int64)),
        _const(p + "ks", np.array([k], np.int64)),
        n("Slice", [p + "shape", p + "i0", p + "i2"], [p + "b_m"]),
        n("Slice", [p + "shape", p + "i2", p + "i3"], [p + "n"]),
        n("Concat", [p + "m1", p + "n"], [p + "rows_n"], axis=0),
        n("Reshape", [d2, p + "rows_n"], [p + "flat"]),  # (R, N), R = B * M
        _const(p + "r2", np.array(r2, np.float32)),
        n("LessOrEqual", [p + "flat", p + "r2"], [p + "inside"]),  # a NaN distance is outside
        n("Cast", [p + "inside"], [p + "inside_i"], to=TensorProto.INT32),
        _const(p + "axis1", np.array(1, np.int64)),
        n("CumSum", [p + "inside_i", p + "axis1"], [p + "rank"]),  # 1-based rank inside
        _const(p + "k32", np.array(k, np.int32)),
        n("LessOrEqual", [p + "rank", p + "k32"], [p + "early"]),
        n("And", [p + "inside", p + "early"], [p + "keep"]),
        n("NonZero", [p + "keep"], [p + "nz"]),  # (2, kept), row-major: rows in order
        n("Slice", [p + "nz", p + "i1", p + "i2", p + "i0"], [p + "cols2"]),
        n("Squeeze", [p + "cols2", p + "i0"], [p + "cols"]),
        _const(p + "zero1", np.array([0], np.int64)),
        n("Concat", [p + "cols", p + "zero1"], [p + "cols0"], axis=0),  # never empty
        n("Slice", [p + "rank", p + "m1", p + "end", p + "i1"], [p + "total"]),  # (R, 1)
        n("Min", [p + "total", p + "k32"], [p + "count32"]),
        n("Cast", [p + "count32"], [p + "count"], to=TensorProto.INT64),
        _const(p + "zero", np.array(0, np.int64)),
        n("CumSum", [p + "count", p + "zero"], [p + "ends"]),
        n("Sub", [p + "ends", p + "count"], [p + "starts"]),  # (R, 1) first kept of each row
        _const(p + "slots", np.arange(k, dtype=np.int64)),
        n("Less", [p + "slots", p + "count"], [p + "valid"]),  # (R, k)
        n("Where", [p + "valid", p + "slots", p + "zero"], [p + "slot"]),  # repeat the first
        n("Add", [p + "starts", p + "slot"], [p + "pos"]),
        n("Gather", [p + "cols0", p + "pos"], [p + "picked"], axis=0),
        n("Equal", [p + "count", p + "zero"], [p + "empty"]),
        n("Where", [p + "empty", p + "zero", p + "picked"], [p + "idx"]),  # empty ball: 0
        n("Concat", [p + "b_m", p + "ks"], [p + "out_shape"], axis=0),
        n("Reshape", [p + "idx", p + "out_shape"], [out]),
    ]
