"""PointCloudSet: one split of a labelled point-cloud dataset held in memory.

Every reader returns this one type, so training, recording and evaluation never
care which file format the shapes came from. It is validated on construction:
once a set exists, its coordinates are finite and its labels name real classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pcdistill.errors import DataError

FINGERPRINT_VERSION = 1


def check_finite(array: np.ndarray, source: str, what: str = "coordinates") -> None:
    """Raise DataError naming the first shape of (S, N, 3) `array` holding NaN or inf."""
    bad = ~np.isfinite(array).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: shape {i} has NaN/inf {what} ({int(bad.sum())} such shapes)")


@dataclass(frozen=True, eq=False)
class PointCloudSet:
    """Shapes (S, N, 3) float32 with int64 labels into `class_names`, optional normals.

    Frozen: fields cannot be rebound, and no method writes into the arrays; every
    transformation returns a new set (validated again).
    """

    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    normals: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        where = self.name or "point cloud set"
        p, y = self.points, self.labels
        if not isinstance(p, np.ndarray) or p.ndim != 3 or p.shape[2] != 3:
            raise DataError(f"{where}: points must be (S, N, 3), got {np.shape(p)}")
        if p.dtype != np.float32:
            raise DataError(f"{where}: points must be float32, got {p.dtype}")
        if not isinstance(y, np.ndarray) or y.shape != (p.shape[0],) or y.dtype != np.int64:
            raise DataError(
                f"{where}: labels must be int64 of shape ({p.shape[0]},), "
                f"got {getattr(y, 'dtype', type(y))} {np.shape(y)}"
            )
        if self.normals is not None and (
            self.normals.shape != p.shape or self.normals.dtype != np.float32
        ):
            raise DataError(
                f"{where}: normals must be float32 {p.shape}, "
                f"got {self.normals.dtype} {self.normals.shape}"
            )
        names = self.class_names
        if not isinstance(names, tuple) or not names or len(set(names)) != len(names):
            raise DataError(f"{where}: class_names must be a non-empty tuple of unique names")
        check_finite(p, where)
        if self.normals is not None:
            check_finite(self.normals, where, "normals")
        out = (y < 0) | (y >= len(names))
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DataError(
                f"{where}: shape {i} has label {int(y[i])}, outside the "
                f"{len(names)} classes [0, {len(names) - 1}]"
            )

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """sha256 of points, labels, class names and normals, independent of `name`.

        Arrays are hashed as little-endian bytes behind a JSON header of shapes and
        class names, so equal data gives the same hex digest on every machine, and
        the offline records can refuse to replay against any other dataset.
        """
        header = {
            "version": FINGERPRINT_VERSION,
            "shape": list(self.points.shape),
            "class_names": list(self.class_names),
            "normals": self.normals is not None,
        }
        h = hashlib.sha256(json.dumps(header).encode())
        h.update(np.ascontiguousarray(self.points, dtype="<f4").data)
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").data)
        if self.normals is not None:
            h.update(np.ascontiguousarray(self.normals, dtype="<f4").data)
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        """Shapes per class, every class listed (zeros included), in label order."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist(), strict=True))

    def subset(self, indices: Sequence[int] | np.ndarray) -> PointCloudSet:
        """The shapes at `indices` (copied), same classes and name."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            points=self.points[idx],
            labels=self.labels[idx],
            normals=None if self.normals is None else self.normals[idx],
        )

    def filter_classes(self, names: Sequence[str]) -> PointCloudSet:
        """Keep only the shapes of `names`, relabelled 0..k-1 in the order given."""
        names = tuple(names)
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise DataError(
                f"{self.name}: unknown classes {unknown}; it has {list(self.class_names)}"
            )
        if len(set(names)) != len(names):
            raise DataError(f"{self.name}: class list {list(names)} repeats a name")
        new_label = np.full(self.num_classes, -1, dtype=np.int64)
        for i, n in enumerate(names):
            new_label[self.class_names.index(n)] = i
        keep = np.flatnonzero(new_label[self.labels] >= 0)
        kept = self.subset(keep)
        return dataclasses.replace(kept, labels=new_label[kept.labels], class_names=names)


def concat(sets: Sequence[PointCloudSet], name: str) -> PointCloudSet:
    """Stack sets that share classes, point count and normals into one named set."""
    if not sets:
        raise DataError(f"{name}: no shapes found")
    first = sets[0]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise DataError(f"{s.name}: class names differ from those of {first.name}")
        if s.num_points != first.num_points:
            raise DataError(
                f"{s.name} has {s.num_points} points per shape but {first.name} has "
                f"{first.num_points}; pass num_points to bring them to one count"
            )
        if (s.normals is None) != (first.normals is None):
            raise DataError(f"{s.name}: normals present in only some of the files of {name}")
    return PointCloudSet(
        points=np.concatenate([s.points for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        class_names=first.class_names,
        normals=None if first.normals is None else np.concatenate([s.normals for s in sets]),
        name=name,
    )
