"""Which implementation the grouped layers run: the fast path or the readable reference.

"fast" (the default) applies each branch's first linear layer per point before
grouping and runs the rest channels-first, on the fused CPU kernels where they
apply (`pcdistill.models.grouped_mlp`); "reference" runs the plain PyTorch
modules on the grouped (B, C, M, k) tensor, as the papers describe them. Both
compute the same function with the same parameters (tests/test_fast_path.py), so
a checkpoint written on one runs on the other. `PCDISTILL_MODEL_PATH=reference` selects
the reference path for a whole process (a command line run, a benchmark).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

PATHS = ("fast", "reference")

_path = os.environ.get("PCDISTILL_MODEL_PATH", "fast")
if _path not in PATHS:
    raise ValueError(f"PCDISTILL_MODEL_PATH must be one of {PATHS}, got {_path!r}")


def get_path() -> str:
    """The current path, "fast" or "reference"."""
    return _path


def set_path(name: str) -> None:
    """Select "fast" or "reference" for every model."""
    global _path
    if name not in PATHS:
        raise ValueError(f"unknown model path {name!r}; choose one of {PATHS}")
    _path = name


@contextmanager
def use_path(name: str) -> Iterator[None]:
    """Run a block on another path, restoring the previous one afterwards."""
    previous = _path
    set_path(name)
    try:
        yield
    finally:
        set_path(previous)
