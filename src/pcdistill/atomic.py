"""Writing output files: checked before the work, written beside the target, renamed over it.

`tempfile.mkstemp` creates files readable by their owner only (0600), and a rename
keeps that mode, so checkpoints and record shards ended up unreadable to the group and
others whatever the user's umask. Here the temporary file gets the mode any plain
`open(path, "w")` would give it (0666 minus the umask).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pcdistill.errors import ConfigError


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


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp file beside `path` for the block to write; renamed over `path` when the block
    ends, removed if it raises: a kill at any moment leaves the old file or the new one."""
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(path: str | Path, option: str, suffixes: tuple[str, ...] | None) -> None:
    """Refuse an output file that cannot be written as asked, before any work: wrong
    suffix (unless `suffixes` is None), a folder, a file where a parent folder must be,
    or a place not writable."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path}: name a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; name the file to write")
    _check_place(path, path.absolute().parents, option)


def check_output_dir(path: str | Path, option: str) -> None:
    """Refuse an output folder that cannot be made or written, before any work: a file
    where it or one of its parents must be, or a place not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder")
    _check_place(path, (path.absolute(), *path.absolute().parents), option)


def _check_place(path: Path, candidates, option: str) -> None:
    """The first existing folder of `candidates` must be a folder and writable."""
    here = next((q for q in candidates if q.exists()), None)
    if here is not None and not here.is_dir():
        raise ConfigError(f"{option} {path}: {here} is a file, not a folder")
    if here is not None and not os.access(here, os.W_OK):  # a read-only mount too
        raise ConfigError(f"{option} {path}: {here} is not writable")
