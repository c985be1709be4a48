"""Evaluation datasets in clip_benchmark's ``wds`` layout, read without webdataset's streaming machinery.

A dataset folder is laid out as ``rankclip.evalset_layout`` says (its file names are taken from there):
class names, optional prompt templates (``{c}`` marks the class name), the dataset type (classification
when the file is absent) and per split the webdataset shards with their count.

A sample is the group of tar members sharing a key (the member name up to the first dot of its base
name, as webdataset groups them). Its image is the first of ``webp``, ``png``, ``jpg``, ``jpeg`` present
(clip_benchmark's order); a classification sample has ``cls`` (an integer label), a retrieval sample
``txt`` (one caption per line, ``str.splitlines``, as clip_benchmark reads it).

``WdsSplit.index()`` reads the tar headers and the small text members once; images are then read by
offset (``os.pread``), so a map-style ``torch.utils.data.Dataset`` serves them in a fixed order to any
number of DataLoader workers.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from rankclip.evalset_layout import (
    CLASSNAMES_FILE,
    DATASET_TYPE_FILE,
    DATASET_TYPES,
    NSHARDS_FILE,
    TEMPLATES_FILE,
)
from rankclip.hashing import sha256_file, sha256_json

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "SplitIndex",
    "WdsImages",
    "WdsSplit",
    "dataset_type",
    "read_classnames",
    "read_templates",
]

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class DatasetError(ValueError):
    """An evaluation dataset is missing a file or holds a malformed sample; the message names it."""


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    return [line.strip() for line in text.splitlines()]


def read_classnames(dataset_dir: Path) -> list[str]:
    """Class names, one per line, from the dataset folder's class-name file."""
    names = _read_lines(Path(dataset_dir) / CLASSNAMES_FILE)
    if not names or any(not name for name in names):
        raise DatasetError(f"{Path(dataset_dir) / CLASSNAMES_FILE}: empty file or a blank line")
    return names


def read_templates(path: Path) -> list[str]:
    """Zero-shot prompt templates (``{c}`` = class name), one per line, from a file or from a dataset
    folder's template file."""
    path = Path(path)
    if path.is_dir():
        path = path / TEMPLATES_FILE
    templates = [line for line in _read_lines(path) if line]
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise DatasetError(f"{path}: every template must contain '{{c}}'; offending: {bad or 'no templates'}")
    return templates


def dataset_type(dataset_dir: Path) -> str:
    """``classification`` or ``retrieval`` from the dataset-type file (classification when absent)."""
    path = Path(dataset_dir) / DATASET_TYPE_FILE
    if not path.is_file():
        return "classification"
    kind = path.read_text(encoding="utf-8").strip().lower()
    if kind not in DATASET_TYPES:
        raise DatasetError(f"{path}: dataset type must be one of {DATASET_TYPES}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class ImageRef:
    shard: int
    offset: int
    size: int


@dataclass
class SplitIndex:
    """What a split holds, in shard order: sample keys, image locations, and labels or captions."""

    shards: list[Path]
    keys: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    labels: list[int] | None = None
    captions: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def _natural_key(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


class WdsSplit:
    """One split (``test``, ``train``) of a ``wds`` dataset folder."""

    def __init__(self, dataset_dir: Path, split: str = "test"):
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.directory = self.dataset_dir / split
        if not self.directory.is_dir():
            raise DatasetError(
                f"{self.directory} does not exist (dataset {self.dataset_dir}, split {split!r})"
            )
        self.shards = self._find_shards()
        self._fingerprint: str | None = None
        self._index: SplitIndex | None = None

    def _find_shards(self) -> list[Path]:
        count_file = self.directory / NSHARDS_FILE
        if count_file.is_file():
            text = count_file.read_text().strip()
            if not text.isdigit() or int(text) < 1:
                raise DatasetError(f"{count_file}: expected a positive shard count, got {text!r}")
            shards = [self.directory / f"{i}.tar" for i in range(int(text))]
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise DatasetError(f"{count_file} names {text} shards but {', '.join(missing)} are missing")
            return shards
        shards = sorted(self.directory.glob("*.tar"), key=_natural_key)
        if not shards:
            raise DatasetError(f"{self.directory} holds no .tar shards")
        return shards

    def fingerprint(self, memo: Path | None = None) -> str:
        """sha256 over the split's shard names and contents, in order (the embedding cache's data key)."""
        if self._fingerprint is None:
            self._fingerprint = sha256_json(
                {"format": "wds-split/1", "shards": [[s.name, sha256_file(s, memo)] for s in self.shards]}
            )
        return self._fingerprint

    def index(self) -> SplitIndex:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> SplitIndex:
        index = SplitIndex(shards=self.shards)
        labels: list[int] = []
        captions: list[list[str]] = []
        for shard_number, shard in enumerate(self.shards):
            try:
                samples = _read_shard(shard, shard_number)
            except (tarfile.TarError, OSError) as error:
                raise DatasetError(f"{shard}: cannot read tar file: {error}") from None
            for key, members in samples:
                image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
                if image_ext is None:
                    raise DatasetError(
                        f"{shard}: sample {key!r} has no image ({'/'.join(IMAGE_EXTENSIONS)}); "
                        f"it has {sorted(members)}"
                    )
                index.keys.append(key)
                index.images.append(members[image_ext])
                if "cls" in members:
                    text = _read_bytes(shard, members["cls"]).decode("utf-8").strip()
                    try:
                        labels.append(int(text))
                    except ValueError:
                        raise DatasetError(
                            f"{shard}: sample {key!r} has a non-integer cls {text!r}"
                        ) from None
                if "txt" in members:
                    captions.append(_read_bytes(shard, members["txt"]).decode("utf-8").splitlines())
        if labels:
            if len(labels) != len(index.keys):
                raise DatasetError(
                    f"{self.directory}: only {len(labels)} of {len(index.keys)} samples have cls"
                )
            index.labels = labels
        if captions:
            if len(captions) != len(index.keys):
                raise DatasetError(
                    f"{self.directory}: only {len(captions)} of {len(index.keys)} samples have txt"
                )
            index.captions = captions
        if not index.keys:
            raise DatasetError(f"{self.directory}: the shards hold no samples")
        return index

    def labels(self) -> np.ndarray:
        index = self.index()
        if index.labels is None:
            raise DatasetError(f"{self.directory}: samples have no 'cls' label (not a classification set)")
        return np.asarray(index.labels, dtype=np.int64)

    def captions(self) -> list[list[str]]:
        index = self.index()
        if index.captions is None:
            raise DatasetError(f"{self.directory}: samples have no 'txt' captions (not a retrieval set)")
        return index.captions


def _read_shard(shard: Path, shard_number: int) -> list[tuple[str, dict[str, ImageRef]]]:
    """(key, {extension: location}) per sample, grouping consecutive members with the same key."""
    samples: list[tuple[str, dict[str, ImageRef]]] = []
    with tarfile.open(shard, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            match = _KEY_EXT.match(member.name)
            if match is None or os.path.basename(member.name).startswith(("__", ".")):
                continue
            key, ext = match.group(1), match.group(2).lower()
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][ext] = ImageRef(shard_number, member.offset_data, member.size)
    return samples


def _read_bytes(shard: Path, ref: ImageRef) -> bytes:
    with open(shard, "rb") as stream:
        stream.seek(ref.offset)
        return stream.read(ref.size)


class WdsImages(Dataset):
    """The split's images, decoded to RGB and transformed, in index order (safe with forked workers)."""

    def __init__(self, index: SplitIndex, transform):
        self.index = index
        self.transform = transform
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int):
        ref = self.index.images[item]
        fd = self._fds.get(ref.shard)
        if fd is None:
            fd = self._fds[ref.shard] = os.open(self.index.shards[ref.shard], os.O_RDONLY)
        data = os.pread(fd, ref.size, ref.offset)  # no shared file position: safe after fork
        try:
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")
        except Exception as error:  # PIL raises several types for corrupt images
            key = self.index.keys[item]
            raise DatasetError(
                f"{self.index.shards[ref.shard]}: sample {key!r}: cannot decode image: {error}"
            ) from None
        return self.transform(image)

    def __del__(self):
        for fd in self._fds.values():
            with suppress(Exception):  # OSError, or a half-torn-down interpreter at exit
                os.close(fd)
