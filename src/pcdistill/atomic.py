"""Temporary files for atomic writes: written beside their target, then renamed over it.

`tempfile.mkstemp` creates files readable by their owner only (0600), and a rename
keeps that mode, so checkpoints and record shards ended up unreadable to the group and
others whatever the user's umask. Here the temporary file gets the mode any plain
`open(path, "w")` would give it (0666 minus the umask).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> Path:
    """A new empty file in `path`'s folder (created if missing), named after `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)
