"""The metrics, as plain functions of embeddings and scores (no model, no files): each one is tested by hand.

Ranks, not sorts. For every query the metric computes one number, the 0-based rank of its best positive
candidate: the count of negative candidates that score at least as high (``ties="pessimistic"``) or
strictly higher (``ties="optimistic"``). A query is a hit at k when that rank is below k. Every query's
rank is computed by the same vectorised comparison, so no query can be left with a default rank of zero
(the CyCLIP code's retrieval bug), and k at or above the number of candidates is a hit for every query.

Ties are settled by the policy, never by index order or by ``torch.topk``'s unspecified order:
pessimistic (the default) puts a positive after every negative with an equal score, so a collapsed model
whose similarities are all equal scores 0 at k = 1 (not 1/C or 100%). With real-valued embeddings ties
have probability ~0, and both policies agree with clip_benchmark (see docs/results_schema.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "TIES",
    "class_embeddings",
    "check_ks",
    "hits_at_k",
    "modality_gap",
    "positive_ranks",
    "retrieval_ranks",
    "retrieval_recall",
    "topk_accuracy",
    "zeroshot_ranks",
]

Ties = Literal["pessimistic", "optimistic"]
TIES: tuple[str, ...] = ("pessimistic", "optimistic")
_CHUNK = 1024


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate a list of k (positive integers), returned sorted and without repeats."""
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks):
        raise ValueError(f"k values must be positive integers, got {list(ks)}")
    return tuple(sorted({int(k) for k in ks}))


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}; got {ties!r}")


def positive_ranks(scores: torch.Tensor, positive: torch.Tensor, ties: Ties = "pessimistic") -> torch.Tensor:
    """0-based rank of each row's best positive column among the row's negative columns.

    ``scores`` (Q, K) real, ``positive`` (Q, K) bool with at least one True per row. Returns (Q,) int64:
    the number of negatives scoring >= (pessimistic) or > (optimistic) the row's best positive score.
    """
    _check_ties(ties)
    scores = _tensor(scores)
    positive = _tensor(positive, torch.bool)
    if scores.shape != positive.shape or scores.ndim != 2:
        raise ValueError(
            f"scores {tuple(scores.shape)} and positive {tuple(positive.shape)} must be equal 2-D"
        )
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    has_positive = positive.any(dim=1)
    if not has_positive.all():
        rows = torch.nonzero(~has_positive).flatten()[:5].tolist()
        raise ValueError(f"rows {rows} have no positive candidate")
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    beats = scores >= best if ties == "pessimistic" else scores > best
    return (beats & ~positive).sum(dim=1)


def hits_at_k(ranks, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Per-query hit (bool) at each k: rank < k."""
    ranks = np.asarray(ranks)
    return {k: ranks < k for k in check_ks(ks)}


# ------------------------------------------------------------------------------------ classification
def class_embeddings(template_features) -> torch.Tensor:
    """Zero-shot class embeddings (C, d) from per-template text features (C, T, d).

    Each template embedding is L2-normalised, the class's templates are averaged, and the mean is
    renormalised: open_clip's ``build_zero_shot_classifier`` and clip_benchmark's ``zero_shot_classifier``.
    """
    features = _tensor(template_features)
    if features.ndim != 3:
        raise ValueError(f"template features must be (classes, templates, dim), got {tuple(features.shape)}")
    mean = F.normalize(features, dim=-1).mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


def zeroshot_ranks(
    image_features,
    labels,
    classifier,
    ties: Ties = "pessimistic",
    class_subset: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the true class for each image; returns (ranks, labels) with labels remapped to the subset.

    ``image_features`` (N, d) normalised; ``classifier`` (C, d) class embeddings; logits are their dot
    products (a logit scale would not change any rank). ``class_subset`` restricts the logits to those
    class indices (ImageNet-R's 200 of ImageNet's 1000): label ``class_subset[j]`` becomes ``j``, and a
    label outside the subset is an error.
    """
    images = _tensor(image_features)
    weights = _tensor(classifier)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 2 or weights.ndim != 2 or images.shape[1] != weights.shape[1]:
        raise ValueError(
            f"image features {tuple(images.shape)} and classifier {tuple(weights.shape)} dimensions differ"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images")
    num_classes = weights.shape[0]
    if class_subset is not None:
        subset = np.asarray(class_subset, dtype=np.int64)
        if subset.ndim != 1 or len(subset) == 0 or len(np.unique(subset)) != len(subset):
            raise ValueError("class_subset must be a non-empty list of distinct class indices")
        if subset.min() < 0 or subset.max() >= num_classes:
            raise ValueError(f"class_subset indices must lie in 0..{num_classes - 1}")
        position = np.full(num_classes, -1, dtype=np.int64)
        position[subset] = np.arange(len(subset))
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes - 1}")
        outside = np.unique(labels[position[labels] < 0])
        if len(outside):
            raise ValueError(f"labels {outside[:10].tolist()} are not in class_subset")
        labels = position[labels]
        weights = weights[torch.as_tensor(subset)]
        num_classes = len(subset)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    ranks = np.empty(len(labels), dtype=np.int64)
    for start in range(0, len(labels), _CHUNK):
        stop = start + _CHUNK
        logits = images[start:stop] @ weights.T
        positive = F.one_hot(torch.as_tensor(labels[start:stop]), num_classes).bool()
        ranks[start:stop] = positive_ranks(logits, positive, ties).numpy()
    return ranks, labels


def topk_accuracy(ranks, labels, ks: Sequence[int], num_classes: int) -> tuple[dict, list[dict]]:
    """Top-k accuracies and per-class accuracies from true-class ranks.

    Returns ``(metrics, per_class)``: ``metrics`` has ``top{k}`` (fraction of images whose true class
    ranks below k) and ``mean_per_class_top{k}`` (the mean over classes that have images of the per-class
    accuracy, i.e. balanced accuracy); ``per_class`` lists, for every class with images, its index,
    number of images and ``top{k}`` accuracies.
    """
    ks = check_ks(ks)
    ranks = np.asarray(ranks)
    labels = np.asarray(labels, dtype=np.int64)
    if len(ranks) == 0:
        raise ValueError("no images to score")
    counts = np.bincount(labels, minlength=num_classes)
    present = np.flatnonzero(counts)
    metrics: dict[str, float] = {}
    per_class_acc: dict[int, np.ndarray] = {}
    for k, hit in hits_at_k(ranks, ks).items():
        metrics[f"top{k}"] = float(hit.mean())
        per_class_acc[k] = np.bincount(labels, weights=hit, minlength=num_classes)[present] / counts[present]
        metrics[f"mean_per_class_top{k}"] = float(per_class_acc[k].mean())
    per_class = [
        {
            "index": int(c),
            "num_samples": int(counts[c]),
            "accuracy": {f"top{k}": float(per_class_acc[k][i]) for k in ks},
        }
        for i, c in enumerate(present)
    ]
    return metrics, per_class


# ------------------------------------------------------------------------------------------ retrieval
def retrieval_ranks(
    image_features, text_features, text_image_index, ties: Ties = "pessimistic"
) -> tuple[np.ndarray, np.ndarray]:
    """(image->text ranks per image, text->image ranks per text) for normalised paired embeddings.

    ``text_image_index[t]`` is the image that text ``t`` describes; an image may have any number >= 1 of
    texts. Image->text: rank of the image's best-scoring own caption among all other captions (a hit at k
    if ANY of its captions is in the top k). Text->image: rank of the caption's image among all images.
    """
    images = _tensor(image_features)
    texts = _tensor(text_features)
    owner = torch.as_tensor(np.asarray(text_image_index, dtype=np.int64))
    num_images = images.shape[0]
    if texts.shape[0] != owner.shape[0]:
        raise ValueError(f"{owner.shape[0]} text_image_index entries for {texts.shape[0]} texts")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image dim {images.shape[1]} != text dim {texts.shape[1]}")
    if len(owner) and (owner.min() < 0 or owner.max() >= num_images):
        raise ValueError(f"text_image_index must lie in 0..{num_images - 1}")
    without = np.flatnonzero(np.bincount(owner.numpy(), minlength=num_images) == 0)
    if len(without):
        raise ValueError(f"images {without[:10].tolist()} have no caption; every image needs at least one")
    image_ranks = np.empty(num_images, dtype=np.int64)
    for start in range(0, num_images, _CHUNK):
        stop = min(start + _CHUNK, num_images)
        scores = images[start:stop] @ texts.T
        positive = owner[None, :] == torch.arange(start, stop)[:, None]
        image_ranks[start:stop] = positive_ranks(scores, positive, ties).numpy()
    text_ranks = np.empty(len(owner), dtype=np.int64)
    for start in range(0, len(owner), _CHUNK):
        stop = start + _CHUNK
        scores = texts[start:stop] @ images.T
        positive = F.one_hot(owner[start:stop], num_images).bool()
        text_ranks[start:stop] = positive_ranks(scores, positive, ties).numpy()
    return image_ranks, text_ranks


def retrieval_recall(image_ranks, text_ranks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``image_to_text_R@k``, ``text_to_image_R@k`` and their mean ``mean_R@k`` from the ranks."""
    metrics: dict[str, float] = {}
    image_hits, text_hits = hits_at_k(image_ranks, ks), hits_at_k(text_ranks, ks)
    for k in check_ks(ks):
        i2t, t2i = float(image_hits[k].mean()), float(text_hits[k].mean())
        metrics[f"image_to_text_R@{k}"] = i2t
        metrics[f"text_to_image_R@{k}"] = t2i
        metrics[f"mean_R@{k}"] = (i2t + t2i) / 2
    return metrics


# ------------------------------------------------------------------------------------- representation
def modality_gap(image_features, text_features, text_image_index=None) -> dict[str, float]:
    """The modality gap ||mean(I) - mean(T)|| of normalised embeddings, and related statistics.

    ``image_features`` (N, d) and ``text_features`` (M, d) are normalised here. With ``text_image_index``
    the mean cosine similarity of the paired (image, caption) embeddings is reported too.
    """
    images = F.normalize(_tensor(image_features).double(), dim=-1)
    texts = F.normalize(_tensor(text_features).double(), dim=-1)
    image_mean, text_mean = images.mean(dim=0), texts.mean(dim=0)
    metrics = {
        "modality_gap": float((image_mean - text_mean).norm()),
        "image_centroid_norm": float(image_mean.norm()),
        "text_centroid_norm": float(text_mean.norm()),
    }
    if text_image_index is not None:
        owner = torch.as_tensor(np.asarray(text_image_index, dtype=np.int64))
        metrics["mean_paired_cosine"] = float((texts * images[owner]).sum(dim=1).mean())
    return metrics
