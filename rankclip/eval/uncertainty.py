"""Uncertainty of the reported numbers: bootstrap intervals over test items, paired comparisons of two
runs on the same items (pooled over seeds), and the spread across seeds. Pure functions on numpy arrays.

A metric here is a mean of per-item values (1/0 hits: top-k, Recall@k). Resampling draws the items with
replacement (the same draw for every seed of a paired comparison), seeded, so reruns are identical; an
interval is the percentile interval of the resampled means.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
_CHUNK = 2**22  # resampled item indices drawn at a time (32 MB of int64)


def _items(values) -> np.ndarray:
    """Per-item values as a (seeds, items) float array; a 1-D input is one seed."""
    array = np.asarray(values, dtype=np.float64)
    array = array[None, :] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"expected per-item values (items,) or (seeds, items), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("per-item values contain NaN or infinite values")
    return array


def resampled_means(values, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the items (last axis; one draw shared by all seeds)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    per_item = _items(values).mean(axis=0)  # the mean over seeds of each item: resampled together
    rng = np.random.default_rng(seed)
    n = len(per_item)
    rows = max(1, _CHUNK // n)
    means = [per_item[rng.integers(0, n, size=(min(rows, resamples - done), n))].mean(axis=1)
             for done in range(0, resamples, rows)]  # fmt: skip
    return np.concatenate(means)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of ``samples``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mean_interval(
    values, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> tuple[float, float]:
    """Bootstrap ``level`` interval of the mean of per-item ``values`` (items,) or (seeds, items)."""
    return percentile_interval(resampled_means(values, resamples, seed), level)


@dataclass(frozen=True)
class Delta:
    """A paired difference ``a - b`` of two means over the same items: estimate and interval."""

    delta: float
    low: float
    high: float
    seeds: int
    items: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        mark = " *" if self.excludes_zero else ""
        return f"{100 * self.delta:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}]{mark}"


def paired_delta(a, b, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Delta:
    """``mean(a) - mean(b)`` for per-item values of two runs on the same items (and the same seeds:
    (seeds, items) each), with a paired bootstrap interval: items resampled once for both runs and every
    seed, so what the two runs share (an easy or a hard item) cancels."""
    a, b = _items(a), _items(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same (seeds, items): {a.shape} vs {b.shape}")
    difference = a - b
    low, high = mean_interval(difference, resamples, level, seed)
    return Delta(float(difference.mean()), low, high, seeds=a.shape[0], items=a.shape[1])


def seed_spread(values) -> tuple[float, float, int]:
    """(mean, sample standard deviation, count) of one metric across seeds; std 0 for one seed."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("no values")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std, int(array.size)


# ------------------------------------------------------------------------------ per-item hits in JSON
def pack_hits(hits) -> str:
    """Per-item 1/0 hits as base64 of their bits (results JSON: 50,000 items in 8.4 kB)."""
    hits = np.asarray(hits)
    if hits.ndim != 1 or not np.isin(hits, (0, 1)).all():
        raise ValueError("hits must be a 1-D array of 0/1 (or bool) values")
    return f"{len(hits)}:" + base64.b64encode(np.packbits(hits.astype(np.uint8))).decode("ascii")


def unpack_hits(text: str) -> np.ndarray:
    """The bool array ``pack_hits`` wrote."""
    count, sep, data = text.partition(":")
    if not sep or not count.isdigit():
        raise ValueError(f"not packed hits: {text[:20]!r}")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    if len(bits) < int(count) or len(bits) - int(count) >= 8:
        raise ValueError(f"packed hits hold {len(bits)} bits, not {count}")
    return bits[: int(count)].astype(bool)
