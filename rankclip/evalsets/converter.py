"""What every evaluation-set converter shares: verified source files, a staged output folder, the layout.

A converter (``imagenet.py``, ``coco.py``, ``linear_probe.py``; ``build.py`` holds the registry)
turns the published archives of one dataset into the evaluation-set layout (``evalset_layout``), the
folder ``rankclip eval`` reads (docs/results_schema.md, "Datasets read"), plus ``manifest.json``: what was
written, from which files (sha256), written last.

Source files (``Resource``) are either given by the user (``archives``: ImageNet has no public URL) or
downloaded with ``rankclip.download`` (resumable ``.part`` files, sha256-verified, atomic rename).
Every file is checked against its pinned sha256 and, where torchvision publishes one, its md5: a corrupt
or partial *download* is deleted and fetched again; a *user's* file is never deleted, the error names it.

The folder is written under a hidden staging name beside ``out_dir`` and swapped in only when complete,
so a killed or failed conversion leaves the previous folder (or none), never a half-written one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rankclip.download import ChecksumError, download
from rankclip.evalset_layout import (
    LAYOUT_FILES,
    NSHARDS_FILE,
    SHARD_NAME,
    lines,
    write_layout,
    write_shard_count,
)
from rankclip.evalsets.registry import REGISTRY, Resource
from rankclip.hashing import sha256_file
from rankclip.shards import write_shards

__all__ = [
    "FORMAT_VERSION",
    "EvalSetError",
    "ConvertOptions",
    "EvalSetSpec",
    "Resource",
    "check_count",
    "check_replaceable",
    "fetch_resource",
    "file_hashes",
    "lines",
    "safe_key",
    "spec_from_registry",
    "staged_dataset",
    "write_layout",
    "write_split",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# What a converter writes into its folder; anything else there is the user's and stops a replacement.
_OWN_FILES = {"manifest.json", *LAYOUT_FILES}
_OWN_SPLIT_FILE = re.compile(rf"(\d+\.tar|{re.escape(NSHARDS_FILE)}|\..*\.tmp)")


class EvalSetError(ValueError):
    """A source file or an option is wrong for an evaluation set; the message names the file or option."""


@dataclass(frozen=True)
class EvalSetSpec:
    """An evaluation set: its sources, what it is for, and the function that converts it.

    ``convert(spec, out, files, options)`` writes the layout into ``out`` (the staging folder) from
    ``files`` (resource file name -> verified local path) and returns the manifest's set-specific part.
    ``expected_counts``: split -> number of samples of the published set (checked unless disabled).
    ``extra``: family-specific settings (ImageNetV2 variant, torchvision class, splits, ...).
    """

    name: str
    family: str
    task: str
    description: str
    resources: tuple[Resource, ...]
    convert: Callable[..., dict]
    expected_counts: Mapping[str, int] | None = None
    extra: Mapping = field(default_factory=dict)


def spec_from_registry(name: str, convert: Callable[..., dict], extra: Mapping | None = None) -> EvalSetSpec:
    """The spec of registered set ``name`` (``registry.REGISTRY``) with its converter."""
    source = REGISTRY[name]
    return EvalSetSpec(
        name=source.name,
        family=source.family,
        task=source.task,
        description=source.description,
        resources=source.resources,
        convert=convert,
        expected_counts=source.expected_counts,
        extra=dict(extra or {}),
    )


@dataclass(frozen=True)
class ConvertOptions:
    """Options every converter takes. ``expected_counts`` None: check the spec's published counts;
    a mapping (split -> count) replaces them (a tiny test archive passes its own); ``check_counts`` False
    skips the check. ``labels``: ImageNet's labels file (instead of the devkit). ``work_dir``: where a
    converter may keep intermediate files (the downloads folder; torchvision extracts its archives there).
    ``md5``: file name -> md5 the caller put in place of torchvision's published one (already verified).
    """

    shard_size: int = 10_000
    check_counts: bool = True
    expected_counts: Mapping[str, int] | None = None
    labels: Path | None = None
    work_dir: Path | None = None
    progress: bool = True
    md5: Mapping[str, str] = field(default_factory=dict)

    def expected(self, spec: EvalSetSpec, split: str) -> int | None:
        if not self.check_counts:
            return None
        counts = self.expected_counts if self.expected_counts is not None else spec.expected_counts
        return (counts or {}).get(split)


# ------------------------------------------------------------------------------------------ source files
def file_hashes(path: Path, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """(sha256, md5) of a file, in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def mirror_url(resource: Resource, base_url: str | None) -> str:
    """The resource's URL, or ``base_url/<filename>`` when a mirror (or a test server) is given."""
    url = resource.source_url(base_url)
    if url is None:
        raise EvalSetError(f"{resource.filename} has no public URL: pass the file ({resource.note})")
    return url


def _check_hashes(path: Path, resource: Resource, sha256: str | None) -> tuple[str, list[str]]:
    """The file's sha256 and the list of mismatches against the expected sha256 and md5."""
    if sha256 is None and resource.md5 is None:
        return sha256_file(path), []
    actual_sha, actual_md5 = file_hashes(path)
    problems = []
    if sha256 is not None and actual_sha != sha256:
        problems.append(f"sha256 {actual_sha}, expected {sha256}")
    if resource.md5 is not None and actual_md5 != resource.md5:
        problems.append(f"md5 {actual_md5}, expected {resource.md5}")
    return actual_sha, problems


def fetch_resource(
    resource: Resource,
    downloads: Path,
    *,
    archive: Path | None = None,
    sha256: str | None = None,
    base_url: str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> tuple[Path, dict]:
    """A verified local copy of ``resource``: the user's ``archive``, or a download into ``downloads``.

    ``sha256`` overrides the pinned hash. Returns the path and its manifest record. A user's file that
    fails a check raises ``ChecksumError`` naming it (it is left alone); a downloaded file that fails the
    md5 check is deleted and downloaded once more (the sha256 check and re-fetch are ``download``'s).
    """
    expected = (sha256 or resource.sha256 or "").strip().lower() or None
    record = {"file": resource.filename, "url": resource.url, "pinned_sha256": expected, "md5": resource.md5}
    if archive is not None:
        path = Path(archive)
        if not path.is_file():
            raise FileNotFoundError(f"{path} (given for {resource.filename}) does not exist or is not a file")
        actual, problems = _check_hashes(path, resource, expected)
        if problems:
            raise ChecksumError(
                f"{path}: not the published {resource.filename}: {'; '.join(problems)} "
                "(a partial or corrupt copy, or another release of the file)"
            )
        _warn_unpinned(path, resource, expected, actual)
        return path, record | {"path": str(path), "sha256": actual, "source": "given"}
    if resource.url is None and not base_url:
        raise FileNotFoundError(
            f"{resource.filename} has no public download: pass it with --archive PATH ({resource.note})"
        )
    url = mirror_url(resource, base_url)
    dest = Path(downloads) / resource.filename
    for attempt in (1, 2):
        download(url, dest, expected, retries=retries, progress=progress)
        if expected is not None and resource.md5 is None:
            actual, problems = expected, []  # download() verified it; no second pass over the file
        else:
            actual, problems = _check_hashes(dest, resource, expected)
        if not problems:
            break
        dest.unlink()
        message = f"{dest} (from {url}): {'; '.join(problems)}"
        if attempt == 2:
            raise ChecksumError(f"{message} after downloading it again")
        log.warning("%s: deleted, downloading it again", message)
    _warn_unpinned(dest, resource, expected, actual)
    return dest, record | {"path": str(dest), "url": url, "sha256": actual, "source": "downloaded"}


def _warn_unpinned(path: Path, resource: Resource, expected: str | None, actual: str) -> None:
    if expected is None:
        log.warning(
            "%s: no pinned sha256 for %s%s; this copy's sha256 is %s (pin it with --sha256 %s=%s)",
            path,
            resource.filename,
            " (its md5 matched torchvision's)" if resource.md5 else "",
            actual,
            resource.filename,
            actual,
        )


# ------------------------------------------------------------------------------------------- the folder
def _is_ours(out: Path) -> bool:
    """Whether ``out`` holds only what a converter writes (so replacing it loses nothing of the user's)."""
    for entry in out.iterdir():
        if entry.is_file() and entry.name in _OWN_FILES:
            continue
        if entry.is_dir() and all(_OWN_SPLIT_FILE.fullmatch(f.name) for f in entry.iterdir()):
            continue
        return False
    return True


def check_replaceable(out_dir: Path) -> None:
    """Raise ``EvalSetError`` unless ``out_dir`` is missing, empty, or an earlier conversion's output."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or not _is_ours(out)):
        raise EvalSetError(
            f"--out {out} exists and holds files no converter wrote: refusing to replace it "
            "(give an empty or new folder)"
        )


@contextmanager
def staged_dataset(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder; when the block completes it replaces ``out_dir``.

    ``out_dir`` may be missing, empty, or an earlier conversion's output; a folder holding anything else
    raises ``EvalSetError`` before any work. If the block raises, the staging folder is removed and
    ``out_dir`` is left as it was.
    """
    out = Path(out_dir)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging")
    old = out.with_name(f".{out.name}.old")
    for leftover in (staging, old):  # from a killed run
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def safe_key(text: str) -> str:
    """A webdataset sample key from a file path: no dots (they start the extension) and no slashes."""
    return _KEY_UNSAFE.sub("_", text)


def write_split(samples: Iterable[dict], directory: Path, shard_size: int) -> dict:
    """Write the split's shards and their count (``evalset_layout``); return its manifest record.

    Sample keys must be unique within the split (a duplicate raises ``EvalSetError`` naming it).
    """
    seen: set[str] = set()
    counter = {"n": 0}

    def checked():
        for sample in samples:
            key = sample["__key__"]
            if key in seen:
                raise EvalSetError(f"{directory.name}: sample key {key!r} occurs twice")
            seen.add(key)
            counter["n"] += 1
            yield sample

    paths = write_shards(checked(), directory, shard_size, SHARD_NAME)
    if not paths:
        raise EvalSetError(f"split {directory.name!r}: the source holds no samples")
    write_shard_count(directory, len(paths))
    return {"num_samples": counter["n"], "shards": [p.name for p in paths]}


def check_count(what: str, found: int, expected: int | None) -> None:
    """Raise ``EvalSetError`` unless ``found == expected`` (``expected`` None: no check)."""
    if expected is not None and found != expected:
        raise EvalSetError(
            f"{what}: {found} samples, expected {expected} (the published count); the file is incomplete "
            "or another release (pass --no-check-counts to convert it anyway)"
        )
