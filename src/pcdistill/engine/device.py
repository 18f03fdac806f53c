"""Device choice and seeding."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys

import torch

from pcdistill.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device='mps' but MPS is not available")
    return torch.device(name)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from several parts (run seed, epoch, step, purpose), stable across runs.

    Every random draw of a step is seeded from its (epoch, step), so a resumed run
    replays exactly what an uninterrupted one would have done.
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_tuned = False


def tune_cpu_allocator() -> bool:
    """Stop glibc from returning every large freed tensor to the OS.

    By default glibc serves allocations above a threshold with fresh mmap pages and
    unmaps them on free, so each training step page-faults its activations in again;
    on point-cloud models, whose grouped activations are large, that was about half
    the step time on our 2-core CPU (BENCHMARKS.md). Raising the mmap and trim
    thresholds keeps the memory in the heap for reuse. Process-wide, so it is done
    by the command line and the CPU trainer, not on import; set
    PCDISTILL_NO_MALLOC_TUNING=1 to opt out. Returns whether it was applied.
    """
    global _tuned
    if (
        _tuned
        or os.environ.get("PCDISTILL_NO_MALLOC_TUNING")
        or not sys.platform.startswith("linux")
    ):
        return _tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    ok = (
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    )
    _tuned = ok
    return ok
