"""Ship a trained checkpoint with the package: weights-only safetensors plus a manifest row.

The accuracy a manifest states is measured here, not copied from a log: test OA/mAcc of
the checkpoint's own test split in float32 and after a float16 round trip. The file is
stored in float16 when that costs at most `FLOAT16_TOLERANCE` test OA and changes no
prediction on the built-in test shapes (whose float32 predictions the manifest keeps,
so a test can hold the shipped file to them); otherwise in float32.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcdistill.atomic import replacing
from pcdistill.models import pretrained

FLOAT16_TOLERANCE = 0.001  # test OA, i.e. 2 of ModelNet40's 2,468 test shapes


def _rounded(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` with every floating tensor rounded through `dtype` (what loading a
    file stored in `dtype` gives)."""
    out = copy.deepcopy(model)
    out.load_state_dict(
        {k: v.to(dtype).float() if v.is_floating_point() else v
         for k, v in model.state_dict().items()}
    )  # fmt: skip
    return out.eval()


def _measure(model: nn.Module, split: Any, class_names: list[str]) -> dict[str, Any]:
    from pcdistill.engine.evaluate import predict_logits
    from pcdistill.engine.metrics import confusion_matrix, summarize

    preds = predict_logits(model, torch.from_numpy(split.points), torch.device("cpu")).argmax(1)
    m = summarize(confusion_matrix(split.labels, preds.numpy(), len(class_names)), class_names)
    return {"oa": m["oa"], "macc": m["macc"], "num_samples": len(preds),
            "predictions": preds.tolist()}  # fmt: skip


def ship_checkpoint(
    path: str | Path,
    tag: str,
    command: str,
    into: Path | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Write `path`'s model as the shipped entry `<model>[_w<width>].<tag>` into `into`
    (default: the package's weights folder) and return its manifest row."""
    from safetensors.torch import save

    from pcdistill.engine.run import checkpoint_and_data

    into = Path(into or pretrained.WEIGHTS_DIR)
    model, ckpt, cfg, test = checkpoint_and_data(str(path), "test")
    model.eval()
    names = list(ckpt["class_names"])
    spec = ckpt["model"]
    key = pretrained.entry_key(spec["name"], spec["width"], tag)
    builtin = checkpoint_and_data(str(path), "test", "builtin")[3]  # inputs as trained
    f32 = {"test": _measure(model, test, names), "builtin": _measure(model, builtin, names)}
    half = _rounded(model, torch.float16)
    f16 = {"test": _measure(half, test, names), "builtin": _measure(half, builtin, names)}
    use_half = (
        f16["test"]["oa"] >= f32["test"]["oa"] - FLOAT16_TOLERANCE
        and f16["builtin"]["predictions"] == f32["builtin"]["predictions"]
    )
    stored, dtype = (f16, torch.float16) if use_half else (f32, torch.float32)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    into.mkdir(parents=True, exist_ok=True)
    file = f"{key}.safetensors"
    with replacing(into / file) as tmp:  # safetensors' own writer leaves the file 0600
        tmp.write_bytes(save(state, metadata={"key": key}))
    test_of = {k: v for k, v in stored["test"].items() if k != "predictions"}
    row = {
        "key": key, "file": file, "sha256": pretrained.sha256(into / file),
        "bytes": (into / file).stat().st_size, "dtype": str(dtype).removeprefix("torch."),
        "model": spec, "params": sum(p.numel() for p in model.parameters()),
        "class_names": names, "dataset_fingerprint": ckpt["dataset_fingerprint"],
        "preprocess": ckpt["preprocess"], "config": ckpt["config"], "command": command,
        "seed": cfg.seed, "epochs": ckpt.get("epoch"), "restarts": ckpt.get("restarts", []),
        "wall_time_s": ckpt.get("elapsed"),
        "test": test_of,
        "test_float32": {k: v for k, v in f32["test"].items() if k != "predictions"},
        "builtin_test": {
            "oa": stored["builtin"]["oa"], "num_samples": stored["builtin"]["num_samples"],
            "predictions_float32": f32["builtin"]["predictions"],
        },
        "shipped": datetime.date.today().isoformat(), "notes": notes,
    }  # fmt: skip
    rows = {**pretrained.manifest(into), key: row}
    tmp = into / (pretrained.MANIFEST + ".tmp")
    tmp.write_text(json.dumps([rows[k] for k in sorted(rows)], indent=1) + "\n")
    os.replace(tmp, into / pretrained.MANIFEST)
    return row
