"""Atomic file writes: a file is written under a hidden temporary name and renamed into place.

``os.replace`` is atomic within a file system, so a reader (or a resumed job) sees the old file, the new
one, or none, never a partial one; a write that fails or is interrupted leaves no temporary file behind.
Plain Python: the workflow imports it while parsing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "temporary_path", "write_atomic_text"]


def temporary_path(path: Path, *, per_process: bool = False) -> Path:
    """The hidden name ``path`` is written under before it is renamed into place: ``.NAME.tmp`` (no
    ``*.tar`` or ``*.json`` glob matches it), or ``.NAME.tmp-PID`` for files that several processes may
    write at once (caches, the report's outputs), so that no two writers share a temporary file."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}" if per_process else f".{path.name}.tmp")


@contextmanager
def atomic_path(path: Path, *, per_process: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield the temporary name to write ``path`` under; when the block completes it is renamed to
    ``path`` (after an ``fsync`` if asked: large files that must survive a crash), when it raises it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, per_process=per_process)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as stream:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic_text(path: Path, text: str, *, per_process: bool = False) -> Path:
    """Write a text file (UTF-8) through its temporary name and ``os.replace``; returns ``path``."""
    with atomic_path(path, per_process=per_process) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
