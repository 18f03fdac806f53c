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

from pcdistill.data.fileio import CLOUD_SUFFIXES, one_shape, read_cloud_file
from pcdistill.data.frames import rotate_to_z
from pcdistill.data.preprocess import PointSelector, normalize_unit_sphere, to_fps_order
from pcdistill.errors import ConfigError, DataError

BATCH = 16

Logits = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """Top classes of one file, with the cloud the model saw (for plotting), or why the
    file could not be read (then `points` is None and `top` empty)."""

    path: Path
    points: np.ndarray | None  # (N, 3)
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    error: str | None = None


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for every supported file under it (sorted, hidden
    files and folders skipped). A folder with none is an error naming it."""
    out: list[Path] = []
    suffixes = CLOUD_SUFFIXES
    for item in map(Path, inputs):
        if not item.is_dir():
            out.append(item)
            continue
        found = sorted(
            p for p in item.rglob("*")
            if p.is_file() and p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(item).parts)
        )  # fmt: skip
        if not found:
            raise DataError(f"{item}: no {'/'.join(suffixes)} file in this folder")
        out.extend(found)
    return out


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


def load_cloud(
    path: str | Path,
    meta: dict,
    sampling: str | None = None,
    up_axis: str = "z",
    columns: tuple[str, ...] | None = None,
) -> np.ndarray:
    """One file (whose up axis is `up_axis`, its table laid out as `columns` says) as the
    (N, 3) float32 z-up cloud the model expects; DataError naming the file."""
    path = Path(path)
    n, seed, data = meta["num_points"], meta["seed"], meta["data"]
    xyz, _ = read_cloud_file(path, n, np.random.default_rng(seed), columns)
    xyz = rotate_to_z(xyz, up_axis)
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
    up_axis: str = "z",
    columns: tuple[str, ...] | None = None,
) -> list[Prediction]:
    """Top-k classes with probabilities for every file (or every file in a folder), using a
    checkpoint or ONNX file. A file that cannot be read gets its error and the rest are
    still predicted; DataError when none can be."""
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
    paths = expand_inputs(files)
    clouds: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            clouds[i] = load_cloud(path, meta, sampling, up_axis, columns)
        except DataError as err:
            errors[i] = str(err)
    if not clouds:  # nothing to predict: the one error, or the first of them
        first = errors[0]
        raise DataError(first if len(paths) == 1 else f"none of the {len(paths)} files could "
                        f"be read; the first: {first}")  # fmt: skip
    logits = logits_of(np.stack(list(clouds.values()))).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    probs = dict(zip(clouds, p / p.sum(1, keepdims=True), strict=True))
    out = []
    for i, path in enumerate(paths):
        if i in errors:
            out.append(Prediction(path, None, [], errors[i]))
            continue
        order = np.argsort(-probs[i], kind="stable")[:top_k]
        top = [(names[c], float(probs[i][c])) for c in order]
        out.append(Prediction(path, clouds[i], top))
    return out


def write_predictions(predictions: Sequence[Prediction], out: str | Path) -> Path:
    """Predictions as JSON (a list of {file, top: [{class, prob}], error}) or CSV (one row
    per file and rank; a failed file is one row with its error), by `out`'s suffix."""
    import csv
    import json

    out = Path(out)
    if out.suffix.lower() == ".json":
        rows = [{"file": str(p.path), "error": p.error,
                 "top": [{"class": c, "prob": prob} for c, prob in p.top]}
                for p in predictions]  # fmt: skip
        out.write_text(json.dumps(rows, indent=1) + "\n")
        return out
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "rank", "class", "prob", "error"])
        for p in predictions:
            if p.error:
                writer.writerow([p.path, "", "", "", p.error])
            for rank, (c, prob) in enumerate(p.top, start=1):
                writer.writerow([p.path, rank, c, f"{prob:.6f}", ""])
    return out


def plot_predictions(predictions: Sequence[Prediction], out: str | Path) -> Path:
    """One 3-D scatter per file, coloured by height (z), titled with the top-1 class."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--png needs matplotlib: pip install 'pcdistill[viz]'") from None

    predictions = [p for p in predictions if p.error is None]
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
    fig.savefig(out, dpi=100, bbox_inches="tight", format="png")
    return out
