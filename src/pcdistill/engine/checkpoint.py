"""Checkpoints: written atomically, validated on load.

A checkpoint names its architecture (model name, width, num_classes, kwargs) and
class list, so it can rebuild its model alone and refuse to load into another.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcdistill.atomic import replacing
from pcdistill.errors import ModelError

FORMAT = "pcdistill-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never half of one.
    """
    with replacing(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def model_spec(name: str, num_classes: int, width: float, kwargs: dict | None = None) -> dict:
    return {"name": name, "num_classes": num_classes, "width": width, "kwargs": dict(kwargs or {})}


def save_model(
    path: str | Path, model: nn.Module, spec: dict, class_names: list[str], fingerprint: str,
    config: dict, preprocess: dict | None = None,
) -> None:  # fmt: skip
    """A weights-only checkpoint (no optimizer state) that eval, record and export accept;
    `preprocess` is the trainer's input recipe (`pcdistill.data.preprocess.input_recipe`)."""
    atomic_save(
        {"format": FORMAT, "version": VERSION, "model": spec, "class_names": list(class_names),
         "dataset_fingerprint": fingerprint, "config": config, "preprocess": preprocess,
         "state_dict": model.state_dict()},
        path,
    )  # fmt: skip


def inference_normalize(ckpt: dict) -> bool | None:
    """Whether inputs to this checkpoint's model are unit-sphere normalised at inference:
    its recorded recipe, or None for a checkpoint written before recipes were recorded."""
    recipe = ckpt.get("preprocess")
    return None if not isinstance(recipe, dict) else bool(recipe.get("normalize"))


# What a full training checkpoint holds beyond a snapshot: per-parameter optimizer moments
# (Adam: twice the model) and the AMP scaler's state; the lr schedule is rebuilt from the
# config at the saved step (checkpoints written before that also hold a "scheduler").
RUN_STATE = ("optimizer", "scheduler", "scaler")


def write_snapshot(run_dir: str | Path, dest: str | Path) -> dict[str, Any]:
    """A run's last.pt without its optimizer and AMP scaler state, plus the epoch rows
    of its metrics.jsonl: a third of the size (Adam), small enough to keep beside the code
    when run folders do not survive, and resumable as a *warm restart* (`pcdistill train
    --resume SNAPSHOT`): the same weights, schedule position and data order, fresh optimizer
    moments. Returns the snapshot."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt")
    if "global_step" not in ckpt:
        raise ModelError(f"{run_dir / 'last.pt'} holds no training progress to snapshot")
    snap = {k: v for k, v in ckpt.items() if k not in RUN_STATE}
    log = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    snap["history"] = [
        r for r in rows if r["event"] in ("epoch", "restart") and r["step"] <= ckpt["global_step"]
    ]
    atomic_save(snap, dest)
    return snap


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint file or a shipped entry's key (not yet applied to a
    model; see `pcdistill.models.pretrained`). A run folder stands for its last.pt."""
    path = Path(path)
    if path.is_dir() and (path / "last.pt").is_file():
        path = path / "last.pt"
    if not path.is_file():
        from pcdistill.models.pretrained import as_checkpoint

        shipped = as_checkpoint(str(path))
        if shipped is None:
            raise ModelError(f"checkpoint not found: {path} (nor a shipped weights key; "
                             "`pcdistill models` lists those)")  # fmt: skip
        return shipped
    try:
        # weights_only: tensors and plain Python data only, so a crafted file cannot run
        # code while it is read (a full unpickle calls whatever the file names). Our
        # checkpoints hold nothing else: run state is tensors, numbers, strings, dicts.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise ModelError(f"checkpoint {path} cannot be read (UnpicklingError: {err})") from None
        raise ModelError(
            f"checkpoint {path} holds Python objects other than tensors and plain data; "
            "refused without unpickling them, since unpickling can run code. pcdistill "
            "checkpoints never do: re-save it from trusted code as a state dict"
        ) from None
    except Exception as err:  # torch raises many types for a damaged file
        raise ModelError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a pcdistill checkpoint")
    if ckpt.get("version") != VERSION:
        raise ModelError(f"checkpoint {path} has version {ckpt.get('version')}, expected {VERSION}")
    return ckpt


def check_compatible(ckpt: dict, path: str | Path, spec: dict, class_names: list[str]) -> None:
    """Refuse a checkpoint made for another architecture or class list, naming the difference."""
    have = ckpt["model"]
    for key in ("name", "num_classes", "width", "kwargs"):
        if have[key] != spec[key]:
            raise ModelError(
                f"checkpoint {path} is for model {key}={have[key]!r}, "
                f"but the run asks for {spec[key]!r}"
            )
    if list(ckpt["class_names"]) != list(class_names):
        raise ModelError(
            f"checkpoint {path} was trained on classes {list(ckpt['class_names'])[:5]}..., "
            f"which differ from the dataset's {list(class_names)[:5]}..."
        )


def load_state(model: nn.Module, state: dict, path: str | Path) -> None:
    """load_state_dict with a clear message instead of PyTorch's size-mismatch dump."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise ModelError(f"checkpoint {path} does not fit this model: {detail}") from None


def build_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights."""
    from pcdistill.models import create_model

    ckpt = load_checkpoint(path)
    spec = ckpt["model"]
    model = create_model(
        spec["name"], num_classes=spec["num_classes"], width=spec["width"], **spec["kwargs"]
    )
    load_state(model, ckpt["state_dict"], path)
    return model, ckpt
