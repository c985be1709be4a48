"""Atomic file writes: a file is written under a hidden temporary name and renamed into place.

``os.replace`` is atomic within a file system, so a reader (or a resumed job) sees the old file, the new
one, or none, never a partial one. Plain Python: the workflow imports it while parsing.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["temporary_path", "write_atomic_text"]


def temporary_path(path: Path) -> Path:
    """The hidden name ``path`` is written under before it is renamed into place (``.NAME.tmp``: no
    ``*.tar`` or ``*.json`` glob matches it)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic_text(path: Path, text: str) -> None:
    """Write a small text file (manifest, class names) through its temporary name and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
