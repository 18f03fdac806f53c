"""Classify single files with a checkpoint (PyTorch) or an exported ONNX file (onnxruntime).

A file goes through the steps the data pipeline applies to a dataset, with the
model's own settings (checkpoint config or ONNX metadata): read (meshes sampled on
their surface to the model's point count, seeded), bring to the point count
(first / seeded random / FPS, as `data.sampling` says), unit-sphere normalisation
if the model was trained on unit-sphere clouds (its checkpoint's recorded recipe:
`data.normalize`, or training data that came normalised, as ModelNet40's HDF5
release does), FPS order if `data.fps_order`. So a shape classifies the same whether
it comes from a dataset folder or from here, and whatever units a file is in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcdistill.data.fileio import one_shape, read_npy_cloud, read_text_cloud, read_trimesh_cloud
from pcdistill.data.preprocess import PointSelector, normalize_unit_sphere, to_fps_order
from pcdistill.errors import ConfigError, DataError

POINT_SUFFIXES = (".npy", ".txt")
TRIMESH_SUFFIXES = (".ply", ".off", ".obj")  # meshes, or a point-cloud .ply
BATCH = 16

Logits = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """Top classes of one file, with the cloud the model saw (for plotting)."""

    path: Path
    points: np.ndarray  # (N, 3)
    top: list[tuple[str, float]]  # (class name, probability), most likely first


def load_classifier(model: str | Path, num_points: int | None = None) -> tuple[Logits, dict]:
    """(logits of clouds (S, N, 3), metadata) for a .onnx file or a .pt checkpoint.

    The metadata (see `export.onnx_metadata`) holds class names and preprocessing.
    `num_points` overrides the model's point count; an ONNX file is fixed to its own.
    """
    from pcdistill.deploy.export import onnx_metadata, ort_session, read_metadata, run_onnx

    path = Path(model)
    if path.suffix.lower() == ".onnx":
        session = ort_session(path)
        meta = read_metadata(path, session)
        if num_points not in (None, meta["num_points"]):
            raise ConfigError(
                f"{path} was exported for {meta['num_points']} points per cloud, "
                f"not {num_points}; export again from the checkpoint for another count"
            )
        return (lambda points: run_onnx(session, points, BATCH)), meta

    from pcdistill.deploy.export import run_torch
    from pcdistill.engine.checkpoint import build_from_checkpoint
    from pcdistill.engine.config import DataConfig

    net, ckpt = build_from_checkpoint(path)
    data_cfg = DataConfig.model_validate(ckpt["config"].get("data", {}))
    meta = onnx_metadata(ckpt, num_points or data_cfg.num_points, data_cfg.model_dump())
    return (lambda points: run_torch(net, points, BATCH)), meta


def load_cloud(path: str | Path, meta: dict, sampling: str | None = None) -> np.ndarray:
    """One file as the (N, 3) float32 cloud the model expects; DataError naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES + TRIMESH_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(POINT_SUFFIXES + TRIMESH_SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    n, seed, data = meta["num_points"], meta["seed"], meta["data"]
    if suffix == ".npy":
        xyz, _ = read_npy_cloud(path)
    elif suffix == ".txt":
        xyz, _ = read_text_cloud(path)
    else:
        xyz, _ = read_trimesh_cloud(path, n, np.random.default_rng(seed))
    shape = one_shape(path, xyz, None, 0, ("unknown",))  # validates: NaN/inf name the file
    shape = PointSelector(n, sampling or data["sampling"], seed)(shape)
    if data["normalize"]:  # the model's recorded recipe: it saw unit-sphere clouds
        shape = normalize_unit_sphere(shape)
    if data["fps_order"]:
        shape = to_fps_order(shape)
    return shape.points[0]


def predict_files(
    files: Sequence[str | Path],
    model: str | Path,
    *,
    top_k: int = 5,
    num_points: int | None = None,
    sampling: str | None = None,
) -> list[Prediction]:
    """Top-k classes with probabilities for every file, using a checkpoint or ONNX file."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    logits_of, meta = load_classifier(model, num_points)
    if not meta["data"].get("normalize_recorded", True):
        warnings.warn(
            f"{model} predates recorded input preprocessing: clouds are used in their own "
            f"units{'' if meta['data']['normalize'] else ' (not normalised)'}, as its "
            "data.normalize says; retrain (or --resume) to record what it was trained on",
            stacklevel=2,
        )
    names = meta["class_names"]
    clouds = np.stack([load_cloud(f, meta, sampling) for f in files])
    logits = logits_of(clouds).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    out = []
    for path, cloud, p in zip(files, clouds, probs, strict=True):
        order = np.argsort(-p, kind="stable")[:top_k]
        out.append(Prediction(Path(path), cloud, [(names[i], float(p[i])) for i in order]))
    return out


def plot_predictions(predictions: Sequence[Prediction], out: str | Path) -> Path:
    """One 3-D scatter per file, coloured by height (z), titled with the top-1 class."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--png needs matplotlib: pip install 'pcdistill[viz]'") from None

    cols = min(len(predictions), 4)
    rows = -(-len(predictions) // cols)
    fig = Figure(figsize=(4 * cols, 4 * rows))
    for i, pred in enumerate(predictions, start=1):
        ax = fig.add_subplot(rows, cols, i, projection="3d")
        x, y, z = pred.points.T
        ax.scatter(x, y, z, c=z, cmap="viridis", s=2, depthshade=False)
        name, p = pred.top[0]
        ax.set_title(f"{pred.path.name}\n{name} ({p:.1%})", fontsize=9)
        ax.set_box_aspect((np.ptp(x) or 1, np.ptp(y) or 1, np.ptp(z) or 1))
        ax.set_axis_off()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    return out
