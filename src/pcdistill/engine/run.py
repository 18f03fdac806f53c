"""From a RunConfig to a trained model: load data, build the model, train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pcdistill.data import PointCloudSet
from pcdistill.engine.checkpoint import build_from_checkpoint, inference_normalize, model_spec
from pcdistill.engine.config import RunConfig
from pcdistill.engine.trainer import BatchSource, Objective, Split, Trainer
from pcdistill.errors import ConfigError, DataError


def load_set(cfg: RunConfig, split: str) -> PointCloudSet:
    """One split of the configured dataset, preprocessed as configured."""
    from pcdistill.data import builtin_dataset, load_dataset

    d = cfg.data
    opts = dict(
        num_points=d.num_points,
        sampling=d.sampling,
        classes=d.classes,
        normalize=d.normalize,
        fps_order=d.fps_order,
        seed=cfg.seed,
        up_axis=d.up_axis,
        columns=d.columns,
    )
    if d.root == "builtin":
        return builtin_dataset(split, **opts)
    return load_dataset(d.root, split, format=d.format, **opts)


def checkpoint_and_data(
    path: str, split: str, data_root: str | None = None
) -> tuple[nn.Module, dict, RunConfig, PointCloudSet]:
    """A checkpoint's model, raw checkpoint and config, plus `split` of the dataset it was
    trained on (or of `data_root`), refusing a dataset with other classes."""
    model, ckpt = build_from_checkpoint(path)
    cfg = data_config(ckpt, data_root)
    data = load_set(cfg, split)
    if list(data.class_names) != list(ckpt["class_names"]):
        raise ConfigError(
            f"{data.name} has classes {list(data.class_names)[:5]}..., but {path} was "
            f"trained on {list(ckpt['class_names'])[:5]}..."
        )
    return model, ckpt, cfg, data


def data_config(ckpt: dict, data_root: str | None = None) -> RunConfig:
    """The config a checkpoint reads data with: its own, or `data_root` in that dataset's
    own layout and frame, normalised as the model was trained (another dataset comes in
    its own units). A student taught by this model must read the data the same way."""
    # Distillation runs store a larger config; the data and model sections are what count here.
    cfg = RunConfig.model_validate(
        {k: v for k, v in ckpt["config"].items() if k in RunConfig.model_fields}
    )
    if data_root and not same_root(data_root, cfg.data.root):
        cfg.data.root = data_root
        cfg.data.format, cfg.data.up_axis, cfg.data.columns = "auto", None, None
        if inference_normalize(ckpt) and not cfg.data.normalize:
            cfg.data.normalize = not _is_training_set(cfg, ckpt)
    return cfg


def _is_training_set(cfg: RunConfig, ckpt: dict) -> bool:
    """Whether cfg's train split, read as configured, is the set the checkpoint was trained
    on, by content fingerprint: a copy of it in another place (another machine) is read as
    trained, so records and student runs made from it match the recipes' own runs."""
    fingerprint = ckpt.get("dataset_fingerprint")
    if not fingerprint:
        return False
    try:
        return load_set(cfg, "train").fingerprint() == fingerprint
    except DataError:  # no train split there, or unreadable: the caller's own load says why
        return False


def same_root(a: str, b: str) -> bool:
    """Whether two dataset roots name the same folder: `../data/x` and `/work/data/x` do
    (a shipped model's config holds an absolute root; a recipe a relative one)."""
    if "builtin" in (a, b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def load_splits(cfg: RunConfig) -> tuple[Split, Split | None, Split, str]:
    """(train, val or None, test, training-set fingerprint) as configured."""
    d = cfg.data
    train, test = load_set(cfg, "train"), load_set(cfg, "test")
    fingerprint = train.fingerprint()
    val = None
    if d.val_fraction > 0:
        fit_idx, val_idx = stratified_holdout(train.labels, d.val_fraction, cfg.seed)
        val = _split(train.points[val_idx], train.labels[val_idx], train.class_names)
        train_split = _split(train.points[fit_idx], train.labels[fit_idx], train.class_names)
        train_split.rows = torch.from_numpy(fit_idx)
    else:
        train_split = _split(train.points, train.labels, train.class_names)
    return train_split, val, _split(test.points, test.labels, test.class_names), fingerprint


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): `fraction` of every class (at least one where a class has two)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(idx)), 1), len(idx) - 1)
        held.extend(rng.choice(idx, size=k, replace=False).tolist())
    held_arr = np.sort(np.asarray(held, dtype=np.int64))
    kept = np.setdiff1d(np.arange(len(labels)), held_arr)
    return kept, held_arr


def _split(points: np.ndarray, labels: np.ndarray, class_names) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(points)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        tuple(class_names),
    )


def check_model_config(cfg: RunConfig) -> None:
    if cfg.model.kwargs.get("fps_ordered") and not cfg.data.fps_order:
        raise ConfigError(
            "model.kwargs.fps_ordered=true takes the first points as the FPS sample, which is "
            "only right on FPS-ordered clouds: set data.fps_order=true as well"
        )


def new_model(cfg: RunConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """The configured zoo model, initialised from the run seed, and its checkpoint spec."""
    from pcdistill.models import create_model

    torch.manual_seed(cfg.seed)
    m = cfg.model
    return create_model(m.name, num_classes, m.width, **m.kwargs), model_spec(
        m.name, num_classes, m.width, m.kwargs
    )


def build_trainer(
    cfg: RunConfig,
    quiet: bool = False,
    objective: Objective | None = None,
    *,
    splits: tuple[Split, Split | None, Split, str] | None = None,
    batches: BatchSource | None = None,
    model: nn.Module | None = None,
    spec: dict | None = None,
) -> Trainer:
    """A trainer for `cfg` (a zoo model from scratch unless `model` and its `spec` are given)."""
    check_model_config(cfg)
    train, val, test, fingerprint = splits or load_splits(cfg)
    num_classes = len(train.class_names)
    if model is None:
        model, spec = new_model(cfg, num_classes)
    return Trainer(
        cfg,
        model,
        spec,
        train,
        test,
        val=val,
        dataset_fingerprint=fingerprint,
        objective=objective,
        batches=batches,
        quiet=quiet,
    )
