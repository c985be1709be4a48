"""The paper's evaluation sets: one registry, one entry point (``rankclip data eval-set NAME``).

| name | task | source |
| --- | --- | --- |
| ``imagenet1k`` | zero-shot | ``ILSVRC2012_img_val.tar`` + devkit or labels file, given by the user |
| ``imagenetv2_matched``, ``imagenetv2_threshold``, ``imagenetv2_top`` | zero-shot | ImageNetV2 tarballs |
| ``imagenet_r`` | zero-shot (200-class subset) | ``imagenet-r.tar`` |
| ``mscoco_karpathy`` | retrieval | COCO ``val2014.zip`` + Karpathy's ``caption_datasets.zip`` |
| ``cifar10`` ... ``svhn`` (ten) | linear probe | torchvision's dataset classes |

``make_eval_set(name, out_dir, ...)`` fetches and verifies the set's files (``fetch_eval_files``), converts
them into a staging folder and swaps it in as ``out_dir`` with a ``manifest.json`` (format
``rankclip-eval-set``): the files read (path, sha256, whether the sha256 was pinned), the splits (sample
counts, shards), the options. See ``converter`` for the layout and the verification rules.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from rankclip.atomic import write_atomic_text
from rankclip.evalset_layout import DATASET_TYPE_FILE
from rankclip.evalsets import coco, imagenet, linear_probe
from rankclip.evalsets.converter import (
    FORMAT_VERSION,
    ConvertOptions,
    EvalSetError,
    EvalSetSpec,
    check_replaceable,
    fetch_resource,
    staged_dataset,
)
from rankclip.shards import check_int

__all__ = ["EVAL_SETS", "check_overrides", "fetch_eval_files", "get_spec", "make_eval_set"]

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-f]{32}")

EVAL_SETS: dict[str, EvalSetSpec] = {**imagenet.SETS, **coco.SETS, **linear_probe.SETS}


def get_spec(name: str) -> EvalSetSpec:
    if name not in EVAL_SETS:
        raise EvalSetError(f"unknown evaluation set {name!r}; known: {', '.join(EVAL_SETS)}")
    return EVAL_SETS[name]


def _archives_by_file(spec: EvalSetSpec, archives) -> dict[str, Path]:
    """Map ``--archive`` values (``PATH`` matched by file name, or ``FILE=PATH``) to the set's files."""
    known = {r.filename for r in spec.resources}
    mapped: dict[str, Path] = {}
    for value in archives or ():
        text = str(value)
        head, _, tail = text.partition("=")
        name, path = (head, Path(tail)) if tail and head in known else (Path(text).name, Path(text))
        if name not in known:
            raise EvalSetError(
                f"--archive {text}: {spec.name} reads {', '.join(sorted(known))}; name the file as one of "
                "them or pass FILE=PATH"
            )
        if name in mapped:
            raise EvalSetError(f"--archive: {name} given twice")
        mapped[name] = path
    return mapped


def check_overrides(spec: EvalSetSpec, sha256: Mapping[str, str], md5: Mapping[str, str]) -> None:
    """Check the config's checksum overrides name files of ``spec``; log each that replaces a published one.

    A published pin is only ever replaced by a hash the caller names for that file (``--sha256``/``--md5``,
    the workflow's ``data.eval_sets.sha256``/``md5``); without one the published checksums are enforced.
    """
    files = {r.filename: r for r in spec.resources}
    for flag, values, pattern in (("--sha256", sha256, _SHA256), ("--md5", md5, _MD5)):
        unknown = set(values) - set(files)
        if unknown:
            raise EvalSetError(f"{flag}: {spec.name} has no file {', '.join(sorted(unknown))}")
        for filename, value in values.items():
            if not pattern.fullmatch(str(value).strip().lower()):
                raise EvalSetError(f"{flag} {filename}={value}: not a hex digest of the right length")
            published = getattr(files[filename], flag.lstrip("-"))
            if published is not None and published != str(value).strip().lower():
                log.warning(
                    "%s: %s %s replaces the published %s (given by the caller or config)",
                    filename,
                    flag.lstrip("-"),
                    value,
                    published,
                )


def fetch_eval_files(
    name: str,
    downloads: Path,
    *,
    archives=(),
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    md5: Mapping[str, str] | None = None,
    only: str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> tuple[dict[str, Path], list[dict]]:
    """Verified local copies of the set's files: file name -> path, plus their manifest records.

    ``archives``: files the user has (``PATH`` or ``FILE=PATH``), used instead of a download.
    ``base_url``: a mirror holding the files by name. ``sha256``: file name -> hash, pins or overrides.
    ``md5``: file name -> md5 replacing torchvision's published one (``check_overrides``; a mirror of
    other files, such as the rehearsal's). ``only``: fetch just this file (the download rule's way).
    """
    spec = get_spec(name)
    given = _archives_by_file(spec, archives)
    pins = dict(sha256 or {})
    md5s = dict(md5 or {})
    check_overrides(spec, pins, md5s)
    if only is not None and only not in {r.filename for r in spec.resources}:
        names = ", ".join(r.filename for r in spec.resources)
        raise EvalSetError(f"{spec.name} has no file {only!r}: {names}")
    files: dict[str, Path] = {}
    records = []
    for resource in spec.resources:
        if only is not None and resource.filename != only:
            continue
        if resource.optional and resource.url is None and resource.filename not in given:
            continue
        if resource.filename in md5s:
            resource = dataclasses.replace(resource, md5=md5s[resource.filename].lower())
        path, record = fetch_resource(
            resource,
            Path(downloads),
            archive=given.get(resource.filename),
            sha256=pins.get(resource.filename),
            base_url=base_url,
            retries=retries,
            progress=progress,
        )
        files[resource.filename] = path
        records.append(record)
    return files, records


def make_eval_set(
    name: str,
    out_dir: Path,
    *,
    archives=(),
    downloads: Path | None = None,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    md5: Mapping[str, str] | None = None,
    labels: Path | None = None,
    shard_size: int = 10_000,
    check_counts: bool = True,
    expected_counts: Mapping[str, int] | None = None,
    retries: int = 3,
    progress: bool = True,
) -> dict:
    """Fetch, verify and convert evaluation set ``name`` into ``out_dir``; return the manifest.

    ``downloads`` (default ``<out_dir's parent>/downloads/<name>``) keeps the downloaded files (and
    torchvision's extracted ones), so a second call downloads nothing. ``labels``: ImageNet's labels file
    instead of the devkit. ``expected_counts`` (split -> count) replaces the published counts the output
    is checked against (``check_counts=False``: no check). ``md5`` also replaces torchvision's own md5
    checks of those files (``linear_probe``). Everything else: ``fetch_eval_files``.
    """
    spec = get_spec(name)
    check_int("shard_size", shard_size, 1)
    out = Path(out_dir)
    downloads = Path(downloads) if downloads is not None else out.parent / "downloads" / name
    if labels is not None and spec.name != "imagenet1k":
        raise EvalSetError(f"--labels is for imagenet1k only, not {spec.name}")
    check_replaceable(out)  # before any download
    files, records = fetch_eval_files(
        name,
        downloads,
        archives=archives,
        base_url=base_url,
        sha256=sha256,
        md5=md5,
        retries=retries,
        progress=progress,
    )
    options = ConvertOptions(
        shard_size=shard_size,
        check_counts=check_counts,
        expected_counts=dict(expected_counts) if expected_counts is not None else None,
        labels=Path(labels) if labels is not None else None,
        work_dir=downloads,
        progress=progress,
        md5=dict(md5 or {}),
    )
    with staged_dataset(out) as staging:
        converted = spec.convert(spec, staging, files, options)
        manifest = {
            "format": "rankclip-eval-set",
            "format_version": FORMAT_VERSION,
            "name": spec.name,
            "task": spec.task,
            "description": spec.description,
            "dataset_type": (staging / DATASET_TYPE_FILE).read_text().strip(),
            "sources": records,
            "shard_size": shard_size,
            "counts_checked": bool(check_counts),
            **converted,
        }
        write_atomic_text(staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log.info("%s: wrote %s", spec.name, out)
    return manifest
