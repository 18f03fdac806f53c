"""ONNX export of a whole classifier, sampling and grouping included, checked against PyTorch.

The graph holds everything a cloud goes through: farthest point sampling, ball query
or kNN, gathers, the MLPs and the head, so a runtime needs nothing but onnxruntime.
It is traced with the pure-torch point ops (`use_backend("torch")`; the numba kernels
would be baked in as constants). FPS's loop over the samples runs scripted under the
tracer, so it is one ONNX Loop node rather than one unrolled block per sample: for the
T3DNet tiny model (1,024 points) export took 6 s instead of 57 s, the file is 0.18 MB
instead of 2.8 MB, onnxruntime loads it in 0.4 s instead of 114 s (its memory-reuse
planner is superlinear in graph size), and batch-1 latency is the same (interleaved
runs, medians 50.5 vs 48.8 ms).

Shapes: the batch dimension is dynamic; the point count is fixed to the one the
model was trained with (`data.num_points`), because the ball-query top-k and the
sample counts are sized for it. Preprocessing (point selection, unit-sphere
normalisation) stays outside the graph; `predict` does it from the metadata.

Exporter: the TorchScript-based one (`dynamo=False`, `dynamic_axes`). Measured on the
T3DNet tiny model (1,024 points, 2 busy cores, FPS still unrolled): 30 s and a 5.7 MB
file, against 654 s and 8.2 MB for `dynamo=True`, which also needs the extra
`onnxscript` package; both matched PyTorch to 2e-8. PyTorch marks the TorchScript
exporter deprecated, so its DeprecationWarning and the tracer's warnings about
Python-side shape checks (constant for a fixed point count) are silenced here.

The traced graph is simplified once by onnxruntime's basic optimisations (constant
folding, redundant-node removal; hardware-independent, standard ONNX ops only).

Class names and preprocessing travel in the file's `metadata_props` (key
"pcdistill", JSON), so an exported file alone is enough to predict.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pcdistill.errors import ConfigError, ModelError

OPSET = 17
INPUT, OUTPUT = "points", "logits"
META_KEY = "pcdistill"
META_FORMAT = "pcdistill-onnx"
# Parity bound on |ONNX - PyTorch| logits, relative to the largest |logit| (at least 1).
# Measured: PointNet++ within 1e-6 of it (float32 rounding of other kernels). DGCNN up
# to 3e-4 on 1 shape of 120: its kNN in 16-64-D feature space compares distances from a
# matmul, which onnxruntime rounds differently, so a near-tie can swap a neighbour. A
# wrong graph (e.g. a size baked in from the traced batch) is off by whole units.
PARITY_RTOL = 1e-2


@dataclass(frozen=True)
class Parity:
    """How closely the ONNX file reproduces the PyTorch model on real shapes."""

    samples: int
    max_abs_diff: float
    logit_scale: float  # largest |logit| seen, the scale the tolerance is relative to
    agreement: float  # fraction of shapes with the same predicted class


def onnx_metadata(ckpt: dict, num_points: int, data_cfg: dict) -> dict[str, Any]:
    """What `predict` needs beside the graph: classes and how to preprocess a cloud.

    "normalize" is the checkpoint's recorded input recipe (`inference_normalize`), so a
    model trained on unit-sphere clouds normalises every input whatever its units; a
    checkpoint from before recipes were recorded falls back to `data.normalize` and
    says so in "normalize_recorded"."""
    from pcdistill.engine.checkpoint import inference_normalize

    recorded = inference_normalize(ckpt)
    data = {k: data_cfg[k] for k in ("sampling", "normalize", "fps_order")}
    if recorded is not None:
        data["normalize"] = recorded
    data["normalize_recorded"] = recorded is not None
    return {
        "format": META_FORMAT,
        "version": 1,
        "model": ckpt["model"],
        "class_names": list(ckpt["class_names"]),
        "dataset_fingerprint": ckpt.get("dataset_fingerprint", ""),
        "num_points": num_points,
        "up_axis": "z",  # the graph takes z-up clouds; predict --up-axis rotates files into it
        "data": data,
        "seed": ckpt["config"].get("seed", 0),
        "quantized": None,
    }


def write_metadata(path: Path, meta: dict) -> None:
    """Store `meta` as JSON under metadata_props["pcdistill"] of the ONNX file at `path`."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(proto, str(path))


def read_metadata(path: str | Path, session=None) -> dict:
    """The pcdistill metadata of an exported file (or of its open `session`); ModelError if
    absent or unreadable."""
    session = session or ort_session(path)
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    try:
        meta = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ModelError(f"{path} has no pcdistill metadata; export it with `pcdistill export`")
    return meta


def ort_session(path: str | Path, threads: int | None = None, optimized_to: Path | None = None):
    """An onnxruntime CPU session on `path` with `threads` intra-op threads (torch's count).

    With `optimized_to`, the graph after the basic (portable) optimisations is saved there.
    """
    ort = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: no per-node optimiser notes
    if optimized_to is not None:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(optimized_to)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for a damaged file
        raise ModelError(f"cannot load ONNX file {path}: {type(err).__name__}: {err}") from None


def require_onnx():
    """onnxruntime (with onnx), or one clear error naming the extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "ONNX export and inference need onnx and onnxruntime: pip install 'pcdistill[export]'"
        ) from None
    return onnxruntime


def run_onnx(session, points: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Logits (S, C) of an onnxruntime session on clouds (S, N, 3), in batches."""
    out = [
        session.run([OUTPUT], {INPUT: np.ascontiguousarray(points[i : i + batch_size])})[0]
        for i in range(0, len(points), batch_size)
    ]
    return np.concatenate(out)


@torch.no_grad()
def run_torch(model: nn.Module, points: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Eval-mode logits (S, C) of a PyTorch model (fast CPU point ops) on clouds (S, N, 3).

    Under no_grad: with autograd recording, the fast path must keep every activation for
    a backward and so runs the torch rewrite instead of the fused inference kernels.
    `model.eval()` only where some module is in training mode: it walks and sets every
    module, a visible share of a batch-1 call, which `pcdistill profile` times."""
    if any(m.training for m in model.modules()):
        model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(points[i : i + batch_size])).numpy()
            for i in range(0, len(points), batch_size)
        ]
    return np.concatenate(out)


def trace_to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write `model` (eval mode) to `path` with a dynamic batch dimension.

    `example` should hold at least 2 clouds, so no size-1 batch can be specialised away.
    """
    from pcdistill.ops import use_backend

    require_onnx()
    import onnx

    from pcdistill.deploy.onnx_index_ops import expand_placeholders

    model.eval()
    with use_backend("torch"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
        )
    graph = onnx.load(str(path))
    if expand_placeholders(graph):
        onnx.save(graph, str(path))


def check_parity(model: nn.Module, path: Path, points: np.ndarray) -> Parity:
    """Compare the ONNX file at `path` with `model` on clouds (S, N, 3)."""
    ref = run_torch(model, points)
    got = run_onnx(ort_session(path), points)
    return Parity(
        samples=len(points),
        max_abs_diff=float(np.abs(got - ref).max()),
        logit_scale=float(np.abs(ref).max()),
        agreement=float((got.argmax(1) == ref.argmax(1)).mean()),
    )


def spread(n: int, k: int | None) -> np.ndarray:
    """Up to k indices spread evenly over range(n) (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    if k < 1:
        raise ConfigError(f"the number of samples must be >= 1, got {k}")
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def check_onnx_output(out: Path, source: str | Path, force: bool = False) -> None:
    """Refuse, before any work, an output that would destroy something: the command's own
    input or a folder, always; any other existing file unless `force` (`--force`), as
    train and record refuse an existing run or shard; and one that cannot be written (a
    file where a parent folder must be, a read-only place)."""
    if not out.exists():
        from pcdistill.atomic import check_output

        check_output(out, "--out", None)
        return
    if Path(source).exists() and out.resolve() == Path(source).resolve():
        raise ConfigError(f"--out {out} is the input checkpoint; write the graph elsewhere")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the .onnx file to write")
    if force:
        return
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out} exists and is not an .onnx file; refusing to replace "
                          "it (--force replaces it)")  # fmt: skip
    raise ConfigError(f"--out {out} already exists; pass --force to replace it")


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | None = "builtin",
    samples: int | None = None,
    rtol: float = PARITY_RTOL,
    force: bool = False,
) -> Parity:
    """Export a checkpoint to ONNX at `out` and check it on `samples` test shapes of `data`.

    `data` is a dataset root, "builtin" (the shipped ModelNet40 cut) or None (the
    checkpoint's own dataset), read with the checkpoint's own preprocessing; it must
    have the checkpoint's classes. The file appears only if max |logit difference| <=
    rtol * max(1, largest |logit|); above that, ModelError, and nothing is left at `out`.
    An existing `out` is replaced only with `force` (see `check_onnx_output`).
    """
    from pcdistill.engine.run import checkpoint_and_data

    out = Path(out)
    check_onnx_output(out, checkpoint, force)
    model, ckpt, cfg, test = checkpoint_and_data(str(checkpoint), "test", data)
    points = np.ascontiguousarray(test.points[spread(len(test), samples)])
    if len(points) < 2:
        raise ModelError(f"{test.name}: parity needs at least 2 test shapes, got {len(points)}")
    meta = onnx_metadata(ckpt, test.num_points, cfg.data.model_dump())
    out.parent.mkdir(parents=True, exist_ok=True)
    traced, tmp = out.with_name(f".{out.name}.traced"), out.with_name(f".{out.name}.tmp")
    try:
        trace_to_onnx(model, torch.from_numpy(points[:2]), traced)
        ort_session(traced, optimized_to=tmp)
        write_metadata(tmp, meta)
        parity = check_parity(model, tmp, points)
        if not parity.max_abs_diff <= rtol * max(1.0, parity.logit_scale):
            raise ModelError(
                f"ONNX export of {checkpoint} does not match PyTorch: max |logit difference| "
                f"{parity.max_abs_diff:.3g} on {parity.samples} shapes (logits up to "
                f"{parity.logit_scale:.3g}, tolerance {rtol:g} of that); no file written"
            )
        os.replace(tmp, out)
    finally:
        traced.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return parity
