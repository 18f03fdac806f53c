"""Classification metrics from a confusion matrix: OA, mean class accuracy, per class."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def summarize(cm: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Overall accuracy, mean accuracy over classes present in the split, and per class."""
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    present = support > 0
    per_class = np.where(present, correct / np.maximum(support, 1), np.nan)
    return {
        "oa": float(correct.sum() / max(cm.sum(), 1)),
        "macc": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: (None if np.isnan(acc) else float(acc))
            for name, acc in zip(class_names, per_class, strict=True)
        },
        "confusion": cm.tolist(),
        "num_samples": int(cm.sum()),
    }
