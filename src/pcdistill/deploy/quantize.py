"""int8 post-training quantization of an exported classifier, and what it costs.

What is quantized: the ONNX export (`export.py`, sampling and grouping included) is
quantized by onnxruntime.quantization on every node that multiplies by a weight: the
Conv nodes (the 1x1 shared MLPs, BatchNorm folded in by the exporter) and the head's
Linear layers (Gemm; dynamic mode turns them into MatMulInteger). Everything else
stays float32: farthest point sampling, ball query and kNN (distances, comparisons,
top-k), gathers, max-pooling and the head's BatchNorm. Those must stay float: a
quantized distance would change which neighbours are picked, so products of two
activations (DGCNN's feature-space kNN is a MatMul) are excluded by name.

- "dynamic": int8 weights ahead of time, activations quantized per batch at run time
  (ConvInteger / MatMulInteger); no calibration data. Weights are unsigned (QUInt8):
  with signed weights onnxruntime's ConvInteger ran 3x slower here.
- "static": QDQ format, per-tensor int8 weights and activations, activation ranges
  calibrated (min/max) on shapes of the TRAINING split, never the test split.
  Per-channel weights did worse here (agreement 0.85 against 0.96 on the SSG teacher).
  onnxruntime's calibrator opens its own session, which cannot turn memory reuse
  off, so calibrating a PointNet++ graph spends a minute or more planning memory.

Not offered: torch.ao.quantization.quantize_dynamic. It covers nn.Linear only, i.e.
the three head layers; the 1x1 convolutions that hold nearly all FLOPs stay float,
its models cannot be exported by `export.py`, and PyTorch deprecates it for torchao.
Measured on the SSG teacher (120 built-in test shapes): 0.99 agreement, no speed-up.

Latency: point-cloud models spend most of their time in sampling and grouping, which
int8 leaves alone, so expect accuracy loss with little or no speed-up on CPU; the
report states both as measured, never assumed. Measured on the PointNet++ SSG teacher
(width 1, 3 epochs on ModelNet40; 120 built-in test shapes, 1 thread, busy machine):
dynamic OA 0.708 -> 0.692, same class 98.3%, batch-1 62 -> 83 ms; static OA
0.708 -> 0.683, same class 95.0%, 49 -> 45 ms (timings vary ~20% run to run here).
Weights shrink 4x: the SSG teacher's file 5.66 -> 1.50 MB; the tiny model's only
0.18 -> 0.16 MB, where graph structure and quantization parameters weigh as much as
the 30k weights. Full ModelNet40 test split, T3DNet tiny student (BENCHMARKS.md):
dynamic 0.3359 -> 0.3371 OA, static 0.3359 -> 0.3318. DGCNN (width 1/8, briefly trained):
dynamic same class 97.5%, static 86-89% whatever the calibration set size or method.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcdistill.deploy.export import (
    check_onnx_output,
    export_onnx,
    ort_session,
    read_metadata,
    require_onnx,
    run_onnx,
    spread,
    write_metadata,
)
from pcdistill.deploy.profile import time_call
from pcdistill.errors import ConfigError

MODES = ("dynamic", "static")
WEIGHT_OP_TYPES = ("Conv", "Gemm", "MatMul")
CALIBRATION_BATCH = 8
PARITY_SAMPLES = 32  # test shapes checked when exporting the float graph first


@dataclass(frozen=True)
class QuantReport:
    """Float and int8 ONNX graphs side by side on the same test shapes."""

    mode: str
    samples: int
    float_acc: float
    int8_acc: float
    agreement: float  # fraction of shapes where int8 predicts the float model's class
    float_ms: float  # batch-1 latency, median
    int8_ms: float
    threads: int
    float_bytes: int
    int8_bytes: int
    quantized: dict[str, int]  # op type -> nodes running in int8
    float_ops: dict[str, int]  # op type -> nodes with a weight in the float graph


def count_ops(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(int8 nodes by op type, float nodes with a weight left) of an ONNX file.

    Dynamic quantization replaces nodes by ConvInteger/MatMulInteger; static QDQ keeps
    Conv/Gemm but feeds them a DequantizeLinear weight.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    producer = {out: node.op_type for node in graph.node for out in node.output}
    quantized: collections.Counter[str] = collections.Counter()
    left: collections.Counter[str] = collections.Counter()
    for node in graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            quantized[node.op_type] += 1
        elif node.op_type in WEIGHT_OP_TYPES and producer.get(node.input[1]) == "DequantizeLinear":
            quantized[f"{node.op_type} (QDQ)"] += 1
        elif node.op_type in WEIGHT_OP_TYPES and node.input[1] in weights:
            left[node.op_type] += 1
    return dict(quantized), dict(left)


def activation_products(path: Path) -> list[str]:
    """Names of Conv/Gemm/MatMul nodes without a weight: products of two activations."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return [
        n.name for n in graph.node if n.op_type in WEIGHT_OP_TYPES and n.input[1] not in weights
    ]


def _calibration_reader(points: np.ndarray):
    """An onnxruntime CalibrationDataReader over clouds (S, N, 3) in small batches."""
    from onnxruntime.quantization import CalibrationDataReader

    from pcdistill.deploy.export import INPUT

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(
                {INPUT: np.ascontiguousarray(points[i : i + CALIBRATION_BATCH])}
                for i in range(0, len(points), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def quantize_onnx(src: Path, dst: Path, mode: str, calibration: np.ndarray | None) -> None:
    """Write the int8 version of the float ONNX file `src` to `dst` (see the module notes)."""
    from onnxruntime import quantization as q

    ops = {
        "op_types_to_quantize": list(WEIGHT_OP_TYPES),
        "nodes_to_exclude": activation_products(src),
    }
    # onnxruntime logs a hint to pre-process the graph first (shape inference and its
    # optimiser); export.py already ran the optimiser, so the hint is noise.
    logging.disable(logging.WARNING)
    try:
        if mode == "dynamic":
            q.quantize_dynamic(src, dst, weight_type=q.QuantType.QUInt8, **ops)
        else:
            q.quantize_static(
                src, dst, _calibration_reader(calibration), quant_format=q.QuantFormat.QDQ,
                per_channel=False, activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8, **ops,
            )  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)


def quantize_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    mode: str = "dynamic",
    data: str | None = None,
    calibration: int = 64,
    samples: int | None = None,
    repeats: int = 20,
    force: bool = False,
) -> QuantReport:
    """Export `checkpoint` to ONNX, quantize it to int8 at `out`, and compare the two.

    `data`: dataset root, "builtin" or None (the checkpoint's own); its test split
    (`samples` shapes spread over it, all by default) measures accuracy, agreement and
    batch-1 latency over `repeats` runs; static mode calibrates on `calibration` shapes
    of its train split. `out` carries the export's metadata, so `predict` can run it.
    """
    from pcdistill.engine.run import checkpoint_and_data

    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode {mode!r}; use one of {MODES}")
    require_onnx()
    out = Path(out)
    check_onnx_output(out, checkpoint, force)
    _, _, _, test = checkpoint_and_data(str(checkpoint), "test", data)
    pick = spread(len(test), samples)
    points, labels = np.ascontiguousarray(test.points[pick]), test.labels[pick]
    calib = None
    if mode == "static":
        _, _, _, train = checkpoint_and_data(str(checkpoint), "train", data)
        calib = train.points[spread(len(train), calibration)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        fp32, int8 = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        export_onnx(checkpoint, fp32, data=data, samples=PARITY_SAMPLES)
        quantize_onnx(fp32, int8, mode, calib)
        quantized, _ = count_ops(int8)
        _, float_ops = count_ops(fp32)
        meta = read_metadata(fp32)
        meta["quantized"] = {"mode": mode, "ops": quantized}
        write_metadata(int8, meta)
        timings, preds = [], []
        for path in (fp32, int8):
            session = ort_session(path)
            preds.append(run_onnx(session, points).argmax(1))
            timings.append(time_call(lambda s=session: run_onnx(s, points[:1]), repeats, 3))
        report = QuantReport(
            mode=mode, samples=len(points),
            float_acc=float((preds[0] == labels).mean()),
            int8_acc=float((preds[1] == labels).mean()),
            agreement=float((preds[0] == preds[1]).mean()),
            float_ms=timings[0]["median_ms"], int8_ms=timings[1]["median_ms"],
            threads=int(timings[0]["threads"]),
            float_bytes=fp32.stat().st_size, int8_bytes=int8.stat().st_size,
            quantized=quantized, float_ops=float_ops,
        )  # fmt: skip
        os.replace(int8, out)
    return report
