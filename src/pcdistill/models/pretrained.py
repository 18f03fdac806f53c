"""Shipped weights: trained models that come with the package, checked before every use.

An entry is a weights-only safetensors file in `weights/` plus its row in
`weights/manifest.json`: the architecture, class names, dataset fingerprint, input
recipe, the training recipe and command, seed, epochs, wall time, accuracy, and the
file's sha256, verified on every load so a damaged or swapped file is refused, never
used. `deploy/ship.py` writes entries; this module only reads them, so loading a model
by name needs nothing beyond the core install.

An entry's key is `<model>.<tag>` at width 1 and `<model>_w<width>.<tag>` otherwise
(`pointnet2_ssg.modelnet40`, `pointnet2_msg_w0.125.modelnet40`); every command that
takes a checkpoint file also takes a key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pcdistill.errors import ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = "manifest.json"


def entry_key(name: str, width: float, tag: str) -> str:
    return f"{name}.{tag}" if width == 1 else f"{name}_w{width:g}.{tag}"


def manifest(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every shipped entry by key ({} when none ships)."""
    path = (root or WEIGHTS_DIR) / MANIFEST
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"weights manifest {path} is not valid JSON ({err})") from None
    return {row["key"]: row for row in rows}


def find(name: str, width: float, tag: str, root: Path | None = None) -> dict[str, Any]:
    """The manifest row of `name` at `width` trained as `tag`, or one error listing what ships."""
    entries = manifest(root)
    key = entry_key(name, width, tag)
    if key not in entries:
        shipped = ", ".join(sorted(entries)) or "none"
        raise ModelError(f"no shipped weights {key!r} ({name} width {width:g}, {tag!r}); "
                         f"shipped: {shipped}")  # fmt: skip
    return entries[key]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(entry: dict[str, Any], root: Path | None = None) -> dict[str, torch.Tensor]:
    """The entry's state dict in float32 (as stored, for integer buffers), checksum verified."""
    from safetensors.torch import load_file

    path = (root or WEIGHTS_DIR) / entry["file"]
    if not path.is_file():
        raise ModelError(f"shipped weights {entry['key']!r}: file {path} is missing")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ModelError(
            f"shipped weights {entry['key']!r}: {path} has sha256 {digest[:16]}..., the "
            f"manifest says {entry['sha256'][:16]}...; the file is damaged or not the shipped one"
        )
    state = load_file(str(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def as_checkpoint(key: str, root: Path | None = None) -> dict[str, Any] | None:
    """A shipped entry in the checkpoint layout every command reads, or None if `key` is not one."""
    from pcdistill.engine.checkpoint import FORMAT, VERSION

    entry = manifest(root).get(key)
    if entry is None:
        return None
    return {
        "format": FORMAT, "version": VERSION, "model": entry["model"],
        "class_names": entry["class_names"], "dataset_fingerprint": entry["dataset_fingerprint"],
        "config": entry["config"], "preprocess": entry["preprocess"],
        "state_dict": load_weights(entry, root),
    }  # fmt: skip
