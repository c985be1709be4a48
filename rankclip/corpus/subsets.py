"""Nested, seeded data-size subsets of a webdataset shard set, as JSON manifests.

The data-size curve trains on subsets of one shard set (CC3M: 500K, 750K, ..., 3M pairs). A subset is a
*manifest*: the sample keys to train on, per shard. Every subset of one seed is a prefix of the same
seeded permutation of all ``(shard, key)`` pairs, so the smaller subsets are inside the larger ones and the
curve measures data size, not which samples were drawn.

The trainer keeps its shard pipeline and adds ``wds.select(manifest_filter(manifest))``: the filter keeps a
sample when its ``__key__`` is listed under its ``__url__``. Shard paths must therefore be spelled the same
way in the manifest and in the trainer's shard list (both come from expanding the same URL); local paths
are compared after ``os.path.abspath``, and a sample from a shard the manifest does not list is an error,
so a spelling mismatch fails loudly instead of training on nothing.

Manifest (``rankclip-subset/1``)::

    {"format": "rankclip-subset/1", "seed": 0, "size": 500000, "source_num_samples": 3000000,
     "shards": {"<shard path>": ["<key>", ...], ...}}

``shards`` lists every shard of the source in sorted order, each with its selected keys in the shard's own
order (an empty list when none was drawn from it); the key lists hold ``size`` keys in all.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

from rankclip.config import ALL_PAIRS

__all__ = [
    "MANIFEST_FORMAT",
    "index_shards",
    "make_subset",
    "make_subsets",
    "manifest_filter",
    "manifest_size",
    "read_manifest",
    "subset_path",
    "write_manifest",
]

MANIFEST_FORMAT = "rankclip-subset/1"
_BLOCK = tarfile.BLOCKSIZE  # 512: tar members' data is padded to whole blocks
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------- indexing


def index_shards(url: str, workers: int = 1) -> dict[str, list[str]]:
    """Map each shard of ``url`` to its sample keys, in the order webdataset yields them.

    ``url`` is brace-expanded like the trainer's (``a/shard-{000000..000009}.tar``; ``::`` joins several).
    A key is what webdataset calls ``__key__``: a member name up to the first dot of its base name
    (``dir/0001.jpg`` -> ``dir/0001``). Like webdataset, members that are not regular files, top-level
    ``__*__`` metadata files and names without a dot are not samples. Only tar headers are read, but
    parsing them is CPU-bound (about 2 s for a shard of 10,000 samples): ``workers`` > 1 indexes that many
    shards at a time in separate processes.

    Raises ``ValueError`` naming the shard if a shard is missing, not a tar, truncated or corrupt, or lists
    one key in two places (webdataset would yield two samples that no key set can tell apart).
    """
    import webdataset as wds  # here, not at import: the workflow reads manifest sizes without torch

    shards = wds.shardlists.expand_urls(url)
    if not shards:
        raise ValueError(f"shard URL {url!r} expands to no shards")
    duplicates = sorted(shard for shard, count in Counter(shards).items() if count > 1)
    if duplicates:
        raise ValueError(f"shard URL {url!r} names these shards more than once: {duplicates}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(shards) == 1:
        return {shard: _shard_keys(shard) for shard in shards}
    with ProcessPoolExecutor(min(workers, len(shards))) as pool:
        return dict(zip(shards, pool.map(_shard_keys, shards), strict=True))


def _shard_keys(shard: str) -> list[str]:
    try:
        return _read_keys(shard)
    except (OSError, EOFError, tarfile.TarError, ValueError) as exc:
        raise ValueError(f"cannot index shard {shard!r}: {exc}") from exc


def _read_keys(shard: str) -> list[str]:
    from webdataset.tariterators import base_plus_ext

    if not os.path.isfile(shard):
        raise FileNotFoundError("no such file (remote URLs are not supported; index a local copy)")
    keys: list[str] = []
    seen: set[str] = set()
    data_end = 0  # where the last member's (padded) data ends
    with tarfile.open(shard, mode="r:*") as tar:
        for member in tar:  # headers only: tarfile seeks over the data
            data_end = member.offset_data + -(-member.size // _BLOCK) * _BLOCK
            if not member.isreg() or _is_metadata(member.name):
                continue
            key, _ = base_plus_ext(member.name)
            if key is None or (keys and keys[-1] == key):
                continue
            if key in seen:
                raise ValueError(
                    f"key {key!r} appears again at member {member.name!r} after other keys; "
                    "a sample's files must be consecutive"
                )
            seen.add(key)
            keys.append(key)
        _check_complete(tar.fileobj, data_end)
    return keys


def _is_metadata(name: str) -> bool:
    # webdataset's tar_file_iterator skips these (meta_prefix = meta_suffix = "__")
    return "/" not in name and name.startswith("__") and name.endswith("__")


def _check_complete(stream, data_end: int) -> None:
    """tarfile stops quietly at a missing or damaged header after the first; catch what it skipped.

    After the last member's data a complete tar has only zeros, starting with the two zero blocks that
    mark its end (a shard cut off between two members lacks them).
    """
    if data_end:
        stream.seek(data_end - 1)
        if len(stream.read(1)) != 1:
            raise ValueError(f"truncated: the last member's data should end at byte {data_end}")
    stream.seek(data_end)
    offset = data_end
    while chunk := stream.read(_CHUNK):
        if chunk.count(0) != len(chunk):
            first = next(i for i, byte in enumerate(chunk) if byte)
            block = offset + first - first % _BLOCK
            raise ValueError(f"unreadable tar header at byte {block} (corrupt or truncated)")
        offset += len(chunk)
    if offset - data_end < 2 * _BLOCK:
        raise ValueError(f"no end-of-archive marker after byte {data_end} (truncated between two members?)")


# ------------------------------------------------------------------------------------------------ subsets


SubsetSize = int | Literal["all"]  # "all": every pair (config.ALL_PAIRS)


def make_subset(index: Mapping[str, list[str]], size: SubsetSize, seed: int) -> dict:
    """The first ``size`` pairs of a ``seed``-ed permutation of all ``(shard, key)`` pairs of ``index``.

    The permutation depends only on ``seed`` and the set of pairs, so for one seed a smaller subset is
    always inside a larger one. ``size="all"``: every pair (the manifest's ``size`` is their count).
    Raises ``ValueError`` if ``size`` is not in ``1..total``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"subset seed must be a non-negative integer, got {seed!r}")
    pairs = sorted((shard, key) for shard, keys in index.items() for key in keys)
    if size == ALL_PAIRS:
        if not pairs:
            raise ValueError("subset 'all' of a shard set without samples")
        size = len(pairs)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"subset size must be a positive integer or {ALL_PAIRS!r}, got {size!r}")
    if size > len(pairs):
        raise ValueError(f"subset size {size} is larger than the {len(pairs)} samples available")
    import numpy as np  # here, not at import: the workflow reads manifest sizes while parsing

    order = np.random.default_rng(seed).permutation(len(pairs))[:size]
    chosen: dict[str, set[str]] = {shard: set() for shard in index}
    for position in order.tolist():
        shard, key = pairs[position]
        chosen[shard].add(key)
    return {
        "format": MANIFEST_FORMAT,
        "seed": seed,
        "size": size,
        "source_num_samples": len(pairs),
        "shards": {shard: [key for key in index[shard] if key in chosen[shard]] for shard in sorted(index)},
    }


def subset_path(out_dir: Path, size: SubsetSize) -> Path:
    """Where ``make_subsets`` writes the manifest of ``size`` samples (``subset-all.json``: every pair)."""
    return Path(out_dir) / f"subset-{size}.json"


def make_subsets(
    url: str, sizes: Iterable[SubsetSize], seed: int, out_dir: Path, workers: int = 1
) -> list[Path]:
    """Index ``url`` once and write ``subset-{size}.json`` under ``out_dir`` for each size (nested).

    All sizes are checked before any file is written. Returns the paths in the order of ``sizes``.
    ``workers``: processes that index shards (see ``index_shards``).
    """
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes is empty; give at least one subset size")
    index = index_shards(url, workers=workers)
    manifests = [make_subset(index, size, seed) for size in sizes]
    paths = []
    for size, manifest in zip(sizes, manifests, strict=True):
        paths.append(subset_path(out_dir, size))
        write_manifest(manifest, paths[-1])
    return paths


# ------------------------------------------------------------------------------------------ manifest I/O


def write_manifest(manifest: Mapping, path: Path) -> None:
    """Validate ``manifest`` and write it to ``path`` atomically (temporary file, then ``os.replace``).

    The JSON has one line per field and per shard: deterministic bytes, readable diffs.
    """
    _validate(manifest, "manifest to write")
    lines = [f"{json.dumps(field)}: {json.dumps(manifest[field])}," for field in _SCALAR_FIELDS]
    shards = [f"  {json.dumps(shard)}: {json.dumps(keys)}" for shard, keys in manifest["shards"].items()]
    text = "{\n " + "\n ".join(lines) + '\n "shards": {\n' + ",\n".join(shards) + "\n }\n}\n"
    from rankclip.atomic import write_atomic_text

    write_atomic_text(Path(path), text)


def manifest_size(path: Path) -> int:
    """The ``size`` field of a subset manifest, from its first lines (write_manifest puts the scalar
    fields first), without parsing the per-shard key lists of a multi-million-pair manifest."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as stream:
            head = [next(stream, "") for _ in range(len(_SCALAR_FIELDS) + 1)]
    except FileNotFoundError:
        raise ValueError(f"{path}: subset manifest not found") from None
    for line in head:
        if line.strip().startswith('"size":'):
            return int(line.split(":", 1)[1].strip().rstrip(","))
    return int(read_manifest(path)["size"])  # not written by write_manifest: read it whole


def read_manifest(path: Path) -> dict:
    """Read and validate a subset manifest; errors name the file and the field at fault."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: subset manifest not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON subset manifest ({exc})") from exc
    _validate(manifest, str(path))
    return manifest


_SCALAR_FIELDS = ("format", "seed", "size", "source_num_samples")


def _validate(manifest, source: str) -> None:
    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{source}: field {field!r} {problem}")

    if not isinstance(manifest, Mapping):
        raise ValueError(f"{source}: a subset manifest is a JSON object, got {type(manifest).__name__}")
    missing = [field for field in (*_SCALAR_FIELDS, "shards") if field not in manifest]
    if missing:
        raise fail(
            missing[0], f"is missing (a {MANIFEST_FORMAT} manifest has {', '.join(_SCALAR_FIELDS)}, shards)"
        )
    if manifest["format"] != MANIFEST_FORMAT:
        raise fail("format", f"is {manifest['format']!r}; expected {MANIFEST_FORMAT!r}")
    for field, low in (("seed", 0), ("size", 1), ("source_num_samples", 1)):
        value = manifest[field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(field, f"must be an integer, got {value!r}")
        if value < low:
            raise fail(field, f"must be >= {low}, got {value}")
    if manifest["size"] > manifest["source_num_samples"]:
        raise fail(
            "size", f"({manifest['size']}) exceeds source_num_samples ({manifest['source_num_samples']})"
        )
    shards = manifest["shards"]
    if not isinstance(shards, Mapping):
        raise fail("shards", f"must map shard paths to key lists, got {type(shards).__name__}")
    total = 0
    for shard, keys in shards.items():
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise fail(f"shards.{shard}", "must be a list of key strings")
        if len(set(keys)) != len(keys):
            raise fail(f"shards.{shard}", "lists a key more than once")
        total += len(keys)
    if total != manifest["size"]:
        raise fail("shards", f"holds {total} keys but size is {manifest['size']}")


# --------------------------------------------------------------------------------------------- filtering


def manifest_filter(manifest: Mapping) -> Callable[[dict], bool]:
    """A predicate for ``wds.select``: True for a sample (``__url__``, ``__key__``) that the manifest lists.

    A sample from a shard the manifest does not list raises ``ValueError``: its path is spelled
    differently from the manifest's (or it is another shard set), and filtering it out would silently
    train on fewer samples than the manifest says.
    """
    _validate(manifest, "manifest")
    keys_of = {_shard_id(shard): frozenset(keys) for shard, keys in manifest["shards"].items()}
    example = next(iter(manifest["shards"]), "(none)")
    by_url: dict[str, frozenset[str]] = {}  # raw __url__ -> keys, so the path is normalised once per shard

    def in_manifest(sample: dict) -> bool:
        url, key = sample.get("__url__"), sample.get("__key__")
        if url is None or key is None:
            raise ValueError(
                "the subset filter needs samples with __url__ and __key__; "
                "apply it before any stage that drops them"
            )
        keys = by_url.get(url)
        if keys is None:
            keys = keys_of.get(_shard_id(url))
            if keys is None:
                raise ValueError(
                    f"sample from shard {url!r}, which the subset manifest does not list; the trainer's "
                    f"shard paths must be spelled like the manifest's, e.g. {example!r}"
                )
            by_url[url] = keys
        return key in keys

    return in_manifest


def _shard_id(url: str) -> str:
    """Local paths compare as absolute normalised paths; anything with a scheme compares as written."""
    if url.startswith("file:"):
        url = url.removeprefix("file://") if url.startswith("file://") else url.removeprefix("file:")
    elif "://" in url or url.startswith("pipe:"):
        return url
    return os.path.abspath(url)
