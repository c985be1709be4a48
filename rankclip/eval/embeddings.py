"""Image and text embeddings of a checkpoint on an evaluation split, computed once and cached on disk.

Cache layout (one folder per checkpoint content, one ``.npz`` per data content)::

    <cache_dir>/<checkpoint sha256[:20]>/split-<split fingerprint[:20]>-<precision>.npz
    <cache_dir>/<checkpoint sha256[:20]>/prompts-<sha256(classnames, templates)[:20]>-<precision>.npz
    <cache_dir>/file-hashes.json          memo of file hashes, keyed by (path, size, mtime)

A split entry holds the raw (unnormalised) image features in sample order, the sample keys, the labels
(classification) or, for a retrieval split, every caption, its text features and ``text_image_index``.
A prompts entry holds the raw text feature of every (class, template) prompt. Raw features are stored
because the linear probe uses them as they are; every other metric normalises them (exactly the
``F.normalize`` open_clip and clip_benchmark apply). The split fingerprint is a sha256 over the shard
files' contents, the checkpoint hash a sha256 over the checkpoint file: change either and the key
changes. Files are written to a temporary name and renamed (``os.replace``), so readers never see a
partial file; an unreadable or mismatching entry is recomputed. The model is only loaded when an entry
is missing, so a metric added later reads the cache without encoding anything.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rankclip import checkpoint as ckpt
from rankclip.atomic import atomic_path
from rankclip.device import resolve_device
from rankclip.eval.datasets import WdsImages, WdsSplit
from rankclip.hashing import sha256_file, sha256_json

__all__ = [
    "CACHE_FORMAT",
    "EmbeddingCache",
    "Encoder",
    "PromptEmbeddings",
    "SplitEmbeddings",
    "default_cache_dir",
]

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
PRECISIONS = ("fp32", "amp")


def default_cache_dir() -> Path:
    """``$RANKCLIP_EMBEDDING_CACHE``, else ``~/.cache/rankclip/embeddings``."""
    return Path(os.environ.get("RANKCLIP_EMBEDDING_CACHE", "~/.cache/rankclip/embeddings")).expanduser()


def _normalize(features: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), dim=-1)


@dataclass
class SplitEmbeddings:
    """Embeddings of one split: raw ``image_features`` (N, d) and, for retrieval, the captions' ones."""

    image_features: np.ndarray
    keys: np.ndarray
    labels: np.ndarray | None = None
    text_features: np.ndarray | None = None
    text_image_index: np.ndarray | None = None
    captions: np.ndarray | None = None

    def images(self, normalize: bool = True) -> torch.Tensor:
        return _normalize(self.image_features) if normalize else torch.from_numpy(self.image_features)

    def texts(self, normalize: bool = True) -> torch.Tensor:
        if self.text_features is None:
            raise ValueError("this split has no captions (not a retrieval set)")
        return _normalize(self.text_features) if normalize else torch.from_numpy(self.text_features)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class PromptEmbeddings:
    """Raw text features of every (class, template) prompt: ``template_features`` (C, T, d)."""

    template_features: np.ndarray
    classnames: np.ndarray
    templates: np.ndarray

    def classifier(self) -> torch.Tensor:
        from rankclip.eval.metrics import class_embeddings

        return class_embeddings(self.template_features)

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


class EmbeddingCache:
    """``.npz`` entries under ``root``, validated on read, written atomically."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    @property
    def hash_memo(self) -> Path:
        return self.root / "file-hashes.json"

    def path(self, checkpoint_sha256: str, kind: str, content_sha256: str, precision: str) -> Path:
        return self.root / checkpoint_sha256[:20] / f"{kind}-{content_sha256[:20]}-{precision}.npz"

    def load(self, path: Path, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The arrays of ``path`` if it exists and was written for ``meta``; None otherwise."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            stored = json.loads(str(arrays.pop("__meta__")))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            log.warning("embedding cache %s is unreadable (%s); recomputing", path, error)
            return None
        if stored != meta:
            log.warning("embedding cache %s was written for %s, not %s; recomputing", path, stored, meta)
            return None
        return arrays

    def save(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
        with atomic_path(path, per_process=True, fsync=True) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, __meta__=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
        return path


class Encoder:
    """A checkpoint's image and text encoders, loaded on first use, with the embedding cache in front.

    ``checkpoint`` is a file written by ``rankclip train`` (or any dict with ``state_dict`` and
    ``model_name``). ``precision``: ``fp32``, or ``amp`` (fp16 autocast on CUDA, bf16 on CPU); it is part
    of the cache key. ``workers`` DataLoader processes decode images.
    """

    def __init__(
        self,
        checkpoint: Path,
        cache: EmbeddingCache | Path | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int = 256,
        workers: int = 0,
        progress: bool = True,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0; got {batch_size}, {workers}")
        self.checkpoint_path = Path(checkpoint)
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.device = resolve_device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self._checkpoint: dict | None = None
        self._sha256: str | None = None
        self._model = None

    # ----------------------------------------------------------------------------------- checkpoint
    @property
    def checkpoint(self) -> dict:
        if self._checkpoint is None:
            self._checkpoint = ckpt.load(self.checkpoint_path, required=("state_dict", "model_name"))
        return self._checkpoint

    @property
    def checkpoint_sha256(self) -> str:
        if self._sha256 is None:
            if not self.checkpoint_path.is_file():
                raise ckpt.CheckpointError(f"checkpoint {self.checkpoint_path} does not exist")
            self._sha256 = sha256_file(self.checkpoint_path, self.cache.hash_memo)
        return self._sha256

    @property
    def model_name(self) -> str:
        return self.checkpoint["model_name"]

    def _load_model(self):
        if self._model is None:
            from rankclip.models import create_model

            model, _, preprocess, tokenizer = create_model(self.model_name, device="cpu")
            state = ckpt.strip_module_prefix(self.checkpoint["state_dict"])
            try:
                model.load_state_dict(state)
            except RuntimeError as error:
                raise ckpt.CheckpointError(
                    f"checkpoint {self.checkpoint_path}: weights do not fit {self.model_name!r}: {error}"
                ) from None
            model.eval().to(self.device)
            self._model = (model, preprocess, tokenizer)
        return self._model

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _meta(self, kind: str, content_sha256: str) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "kind": kind,
            "checkpoint_sha256": self.checkpoint_sha256,
            "content_sha256": content_sha256,
            "precision": self.precision,
        }

    # ------------------------------------------------------------------------------------- encoding
    @torch.inference_mode()
    def encode_images(self, split: WdsSplit) -> np.ndarray:
        """Raw image features (N, d) of the split's images in index order (no cache)."""
        model, preprocess, _ = self._load_model()
        loader = torch.utils.data.DataLoader(
            WdsImages(split.index(), preprocess),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        chunks = []
        for images in tqdm(loader, desc=f"images {split.directory}", unit="batch", disable=not self.progress):
            with self._autocast():
                features = model.encode_image(images.to(self.device, non_blocking=True), normalize=False)
            chunks.append(features.float().cpu())
        return torch.cat(chunks).numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], desc: str = "texts") -> np.ndarray:
        """Raw text features (len(texts), d), batched (no cache)."""
        model, _, tokenizer = self._load_model()
        chunks = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not self.progress):
            tokens = tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            with self._autocast():
                features = model.encode_text(tokens, normalize=False)
            chunks.append(features.float().cpu())
        return torch.cat(chunks).numpy()

    # --------------------------------------------------------------------------------------- cached
    def split_embeddings(self, split: WdsSplit) -> SplitEmbeddings:
        """The split's embeddings from the cache, computing and storing them on a miss."""
        fingerprint = split.fingerprint(self.cache.hash_memo)
        meta = self._meta("split", fingerprint)
        path = self.cache.path(self.checkpoint_sha256, "split", fingerprint, self.precision)
        arrays = self.cache.load(path, meta)
        if arrays is not None:
            log.info("embeddings of %s read from %s", split.directory, path)
            return SplitEmbeddings(**arrays)
        index = split.index()
        result = SplitEmbeddings(
            image_features=self.encode_images(split), keys=np.asarray(index.keys, dtype=np.str_)
        )
        if index.labels is not None:
            result.labels = np.asarray(index.labels, dtype=np.int64)
        if index.captions is not None:
            flat = [caption for captions in index.captions for caption in captions]
            result.captions = np.asarray(flat, dtype=np.str_)
            result.text_image_index = np.repeat(
                np.arange(len(index.captions), dtype=np.int64), [len(c) for c in index.captions]
            )
            result.text_features = self.encode_texts(flat, desc=f"captions {split.directory}")
        self.cache.save(path, meta, result.arrays())
        log.info("embeddings of %s written to %s", split.directory, path)
        return result

    def prompt_embeddings(self, classnames: Sequence[str], templates: Sequence[str]) -> PromptEmbeddings:
        """Raw features of ``template.format(c=classname)`` for every class and template, cached."""
        classnames, templates = list(classnames), list(templates)
        if not classnames or not templates:
            raise ValueError("zero-shot classification needs at least one class name and one template")
        fingerprint = sha256_json({"classnames": classnames, "templates": templates})
        meta = self._meta("prompts", fingerprint)
        path = self.cache.path(self.checkpoint_sha256, "prompts", fingerprint, self.precision)
        arrays = self.cache.load(path, meta)
        if arrays is not None:
            return PromptEmbeddings(**arrays)
        try:
            prompts = [template.format(c=name) for name in classnames for template in templates]
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"templates must use '{{c}}' for the class name and no other field: {error}"
            ) from None
        features = self.encode_texts(prompts, desc="class prompts")
        result = PromptEmbeddings(
            template_features=features.reshape(len(classnames), len(templates), -1),
            classnames=np.asarray(classnames, dtype=np.str_),
            templates=np.asarray(templates, dtype=np.str_),
        )
        self.cache.save(path, meta, result.arrays())
        return result
