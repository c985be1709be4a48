"""Representation analysis: a joint UMAP of paired image and caption embeddings (the paper's Fig. 6), and
the top-k images retrieved for a few caption queries (Fig. 5).

The projection is fitted on the normalised image embeddings and the embedding of each image's first
caption together (one pair per image, at most ``max_pairs`` pairs drawn with ``seed``), cosine metric,
``random_state=seed`` (umap-learn is then deterministic and single-threaded). umap-learn compiles its numba
kernels in every process (~6 s), most of them without numba's on-disk cache: the cache is switched on for
them, so that only the first process on a machine compiles (same machine code, same coordinates).

The table written for the notebook has one row per point: ``x, y, modality`` (``image`` or ``text``),
``pair`` (the image's index in the split) and ``key`` (the sample key).

The retrieval examples take the first caption of ``num_queries`` images drawn with ``seed`` (the same
queries for every checkpoint evaluated on the same split), rank all images of the split by cosine
similarity, and keep the top ``k`` with a small PNG thumbnail (base64) of each, so the figure needs only
the results folder. One row per (query, rank): ``query, caption, target, target_key, target_rank, rank,
image, key, score, hit, thumbnail`` (``target_rank``: 0-based rank of the caption's own image).
"""

from __future__ import annotations

import base64
import csv
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from rankclip.atomic import atomic_path
from rankclip.eval.datasets import WdsImages, WdsSplit
from rankclip.eval.embeddings import SplitEmbeddings

__all__ = [
    "RETRIEVAL_EXAMPLE_COLUMNS",
    "first_caption_pairs",
    "retrieval_examples",
    "umap_projection",
    "write_retrieval_examples",
    "write_umap_table",
]
RETRIEVAL_EXAMPLE_COLUMNS = (
    "query", "caption", "target", "target_key", "target_rank",
    "rank", "image", "key", "score", "hit", "thumbnail",
)  # fmt: skip


def first_caption_pairs(embeddings: SplitEmbeddings, max_pairs: int | None, seed: int) -> np.ndarray:
    """Image indices of the pairs to project (all, or ``max_pairs`` drawn with ``seed``, sorted)."""
    num_images = len(embeddings.image_features)
    if max_pairs is None or max_pairs >= num_images:
        return np.arange(num_images)
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    return np.sort(np.random.default_rng(seed).choice(num_images, size=max_pairs, replace=False))


def cache_numba_kernels(*packages: str) -> int:
    """Switch numba's on-disk cache on for the compiled functions of the loaded ``packages``' modules."""
    from numba.core.dispatcher import Dispatcher

    modules = [m for name, m in list(sys.modules.items()) if m and name.split(".")[0] in packages]
    kernels = {id(f): f for m in modules for f in vars(m).values() if isinstance(f, Dispatcher)}
    for kernel in kernels.values():
        kernel.enable_caching()
    return len(kernels)


def umap_projection(
    embeddings: SplitEmbeddings,
    max_pairs: int | None = 5000,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> dict[str, np.ndarray]:
    """2-D UMAP coordinates of paired image / first-caption embeddings: ``xy``, ``modality``, ``pair``."""
    import umap

    cache_numba_kernels("umap", "pynndescent")
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
    with atomic_path(path, per_process=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["x", "y", "modality", "pair", "key"])
        for (x, y), modality, pair, key in zip(
            projection["xy"], projection["modality"], projection["pair"], projection["key"], strict=True
        ):
            writer.writerow([repr(float(x)), repr(float(y)), modality, int(pair), key])
    return path


def _thumbnail(image, size: int) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def retrieval_examples(
    embeddings: SplitEmbeddings,
    split: WdsSplit,
    num_queries: int = 4,
    k: int = 10,
    seed: int = 0,
    thumbnail_size: int = 96,
) -> list[dict]:
    """The top-``k`` images for the first caption of ``num_queries`` images drawn with ``seed`` (Fig. 5)."""
    if embeddings.text_features is None or embeddings.text_image_index is None:
        raise ValueError("retrieval examples need paired embeddings (a retrieval split)")
    if num_queries < 1 or k < 1:
        raise ValueError(f"num_queries and k must be >= 1, got {num_queries} and {k}")
    targets = first_caption_pairs(embeddings, num_queries, seed)
    owner = embeddings.text_image_index
    first_caption = np.full(len(embeddings.image_features), -1, dtype=np.int64)
    first_caption[owner[::-1]] = np.arange(len(owner))[::-1]
    queries = first_caption[targets]
    texts = [str(embeddings.captions[i]) if embeddings.captions is not None else "" for i in queries]
    images = embeddings.images().numpy()
    scores = embeddings.texts()[queries].numpy() @ images.T  # (queries, images), cosine similarities
    k = min(k, len(images))
    reader = WdsImages(split.index(), transform=lambda image: image)
    thumbnails: dict[int, str] = {}
    rows = []
    for query, (target, row) in enumerate(zip(targets, scores, strict=True)):
        order = np.argsort(-row, kind="stable")[:k]
        target_rank = int((row > row[target]).sum())
        for rank, image in enumerate(order):
            image = int(image)
            if image not in thumbnails:
                thumbnails[image] = _thumbnail(reader[image], thumbnail_size)
            rows.append(
                {
                    "query": query,
                    "caption": texts[query],
                    "target": int(target),
                    "target_key": str(embeddings.keys[target]),
                    "target_rank": target_rank,
                    "rank": rank,
                    "image": image,
                    "key": str(embeddings.keys[image]),
                    "score": float(row[image]),
                    "hit": image == int(target),
                    "thumbnail": thumbnails[image],
                }
            )
    return rows


def write_retrieval_examples(rows: list[dict], path: Path) -> Path:
    """Write the retrieval examples as CSV (``RETRIEVAL_EXAMPLE_COLUMNS``) atomically."""
    path = Path(path)
    with atomic_path(path, per_process=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=RETRIEVAL_EXAMPLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"score": repr(row["score"]), "hit": int(row["hit"])})
    return path
