"""Atomic, reproducible webdataset shard writing.

A shard is written under a hidden temporary name (``.NAME.tmp``, which no ``*.tar`` glob matches) and
renamed into place with ``os.replace`` only once it is complete, so a crashed or killed run never leaves
a truncated ``.tar`` behind. Tar members get a fixed mtime and owner, so the same samples always give
byte-identical shards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import webdataset as wds

from rankclip.atomic import temporary_path

__all__ = ["atomic_tar_writer", "write_shards"]

# Fixed tar metadata: shards depend only on their samples, not on when or by whom they were written.
_TAR_MTIME = 0  # an int: a float mtime makes tarfile add a PAX header to every member
_TAR_OWNER = "rankclip"


@contextmanager
def atomic_tar_writer(path: Path) -> Iterator[wds.TarWriter]:
    """Yield a ``webdataset.TarWriter`` whose file appears at ``path`` only if the block completes.

    Samples must hold ``bytes`` values (the writer's encoder is off, so nothing depends on webdataset's
    encoding rules). If the block raises, the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    stream = open(tmp, "wb")  # noqa: SIM115 -- closed on both paths below, before the rename or unlink
    writer = None
    try:
        writer = wds.TarWriter(stream, encoder=False, mtime=_TAR_MTIME, user=_TAR_OWNER, group=_TAR_OWNER)
        yield writer
        writer.close()
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            with suppress(Exception):
                writer.close()  # flush the tar stream now, not from a finaliser after the file is closed
        stream.close()
        tmp.unlink(missing_ok=True)
        raise


def write_shards(
    samples: Iterable[Mapping[str, bytes | str]],
    out_dir: Path,
    shard_size: int,
    name_pattern: str = "shard-{index:06d}.tar",
) -> list[Path]:
    """Write ``samples`` into consecutive shards of at most ``shard_size`` samples each.

    ``name_pattern`` is formatted with ``index`` (0, 1, ...). Returns the shard paths in order. An empty
    ``samples`` writes no shard.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    paths: list[Path] = []
    iterator = iter(samples)
    while True:
        first = next(iterator, None)
        if first is None:
            return paths
        path = out_dir / name_pattern.format(index=len(paths))
        with atomic_tar_writer(path) as writer:
            writer.write(first)
            for _, sample in zip(range(shard_size - 1), iterator, strict=False):
                writer.write(sample)
        paths.append(path)


def replace_shards(
    samples: Iterable[dict], directory: Path, shard_size: int, name_pattern: str
) -> list[Path]:
    """Write a split's shards; delete shards (and temporaries of killed runs) an earlier, larger run left."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = write_shards(samples, directory, shard_size, name_pattern)
    kept = {p.name for p in paths}
    for path in directory.glob("*.tar"):
        if path.name not in kept:
            path.unlink()
    for path in directory.glob(".*.tmp"):
        path.unlink()
    return paths


def check_int(name: str, value, minimum: int, maximum: int | None = None, optional: bool = False) -> None:
    """Raise a TypeError/ValueError naming ``name`` unless ``value`` is an int in ``minimum..maximum``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        valid = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be {valid}, got {value}")
