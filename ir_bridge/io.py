"""File writing that never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    # mkstemp creates files 0600; a finished artifact should get the usual umask mode.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _finish(tmp, path) -> None:
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def _discard(tmp) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        _finish(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def atomic_write_path(path, writer) -> None:
    """Call ``writer(tmp_path)`` for a library that writes by path, then rename to ``path``.

    The temporary file keeps ``path``'s suffix, since some writers pick the format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        _finish(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
