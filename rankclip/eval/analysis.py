"""Representation analysis (the paper's Fig. 6): a joint UMAP of paired image and caption embeddings.

The projection is fitted on the normalised image embeddings and the embedding of each image's first
caption together (one pair per image, at most ``max_pairs`` pairs drawn with ``seed``), cosine metric,
``random_state=seed`` (umap-learn is then deterministic and single-threaded). The table written for the
notebook has one row per point: ``x, y, modality`` (``image`` or ``text``), ``pair`` (the image's index
in the split) and ``key`` (the sample key).
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from rankclip.eval.embeddings import SplitEmbeddings

__all__ = ["first_caption_pairs", "umap_projection", "write_umap_table"]


def first_caption_pairs(embeddings: SplitEmbeddings, max_pairs: int | None, seed: int) -> np.ndarray:
    """Image indices of the pairs to project (all, or ``max_pairs`` drawn with ``seed``, sorted)."""
    num_images = len(embeddings.image_features)
    if max_pairs is None or max_pairs >= num_images:
        return np.arange(num_images)
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    return np.sort(np.random.default_rng(seed).choice(num_images, size=max_pairs, replace=False))


def umap_projection(
    embeddings: SplitEmbeddings,
    max_pairs: int | None = 5000,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> dict[str, np.ndarray]:
    """2-D UMAP coordinates of paired image / first-caption embeddings: ``xy``, ``modality``, ``pair``."""
    import umap

    if embeddings.text_features is None or embeddings.text_image_index is None:
        raise ValueError("the UMAP projection needs paired embeddings (a retrieval split)")
    pairs = first_caption_pairs(embeddings, max_pairs, seed)
    owner = embeddings.text_image_index
    first_caption = np.full(len(embeddings.image_features), -1, dtype=np.int64)
    first_caption[owner[::-1]] = np.arange(len(owner))[::-1]  # lowest caption index per image
    images = F.normalize(embeddings.images(normalize=False)[pairs], dim=-1).numpy()
    texts = F.normalize(embeddings.texts(normalize=False)[first_caption[pairs]], dim=-1).numpy()
    points = np.concatenate([images, texts]).astype(np.float32)
    if len(points) < 3:
        raise ValueError("the UMAP projection needs at least two pairs")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(points) - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", spectral init notes
        xy = reducer.fit_transform(points)
    return {
        "xy": np.asarray(xy, dtype=np.float64),
        "modality": np.repeat(np.asarray(["image", "text"]), len(pairs)),
        "pair": np.concatenate([pairs, pairs]),
        "key": np.concatenate([embeddings.keys[pairs], embeddings.keys[pairs]]),
    }


def write_umap_table(projection: dict[str, np.ndarray], path: Path) -> Path:
    """Write the projection as CSV (``x,y,modality,pair,key``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["x", "y", "modality", "pair", "key"])
            for (x, y), modality, pair, key in zip(
                projection["xy"], projection["modality"], projection["pair"], projection["key"], strict=True
            ):
                writer.writerow([repr(float(x)), repr(float(y)), modality, int(pair), key])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
