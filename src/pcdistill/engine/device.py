"""Device choice and seeding."""

from __future__ import annotations

import hashlib

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
