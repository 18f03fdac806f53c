"""What a record shard holds: one header, and one fixed-size row per augmented copy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RecordHeader:
    """Everything a reader checks before it trusts a shard's rows."""

    teacher_fingerprint: str
    teacher_spec: dict[str, Any]  # model name, width, num_classes, kwargs
    dataset_fingerprint: str
    class_names: tuple[str, ...]
    augment_spec: list[dict[str, Any]]  # ShapeAugment.spec()
    num_samples: int  # size of the whole training set, not of this shard
    copies: int  # K copies per sample
    num_params: int
    feature_dim: int = 0  # 0: no features recorded
    shard: int = 0
    num_shards: int = 1
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RecordHeader:
        data = json.loads(text)
        data["class_names"] = tuple(data["class_names"])
        return cls(**data)


def row_dtype(num_params: int, num_classes: int, feature_dim: int = 0) -> np.dtype:
    """Packed row: index u4, copy u2, params f4[P], logits f2[C] (+ feature f2[D])."""
    fields: list[tuple] = [
        ("index", "<u4"),
        ("copy", "<u2"),
        ("params", "<f4", (num_params,)),
        ("logits", "<f2", (num_classes,)),
    ]
    if feature_dim:
        fields.append(("feature", "<f2", (feature_dim,)))
    return np.dtype(fields)  # packed: numpy adds no padding without align=True


def model_fingerprint(model: nn.Module, spec: dict[str, Any]) -> str:
    """sha256 of the architecture spec and every tensor of the state dict, in key order."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
