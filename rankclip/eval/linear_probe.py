"""Linear probes on frozen image features: the paper's protocol, and scikit-learn's logistic regression.

``method="linear"`` (default; the paper's "linear layer on frozen features") follows the authors' code
(the CyCLIP base's ``get_linear_probe_metrics``):
one ``nn.Linear`` on the raw (unnormalised) image features, cross-entropy, AdamW (betas 0.9/0.999,
weight decay 0.01 on the weight, none on the bias), learning rate 0.005 with a cosine schedule over all
steps and no warm-up, 32 epochs of shuffled mini-batches of 16 (the last one partial), top-1 on the test
split. Initialisation and shuffling draw from one ``torch.Generator`` seeded with ``seed`` (the global
RNG is untouched), and training runs on the CPU in float32: the same features and seed give the same
classifier bit for bit.

``method="logistic"`` is the CLIP paper's protocol: L-BFGS multinomial logistic regression, with C chosen
on a held-out part of the training split (a seeded random ``val_fraction``), first over a decade grid,
then by bisection (in log space) around the best value; the final model is refitted on the whole
training split with that C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from rankclip.eval.metrics import positive_ranks, topk_accuracy
from rankclip.optim import cosine_lr

__all__ = [
    "PROBE_METHODS",
    "LinearProbeConfig",
    "linear_probe",
    "predict_ranks",
    "probe_optimizer",
    "train_linear_probe",
]


PROBE_METHODS = ("linear", "logistic")  # config eval.probe, `rankclip eval linear_probe --probe`


@dataclass(frozen=True)
class LinearProbeConfig:
    method: Literal["linear", "logistic"] = "linear"
    normalize: bool = False  # the authors' code probes raw features
    seed: int = 0
    ks: tuple[int, ...] = (1,)
    # method="linear"
    epochs: int = 32
    batch_size: int = 16
    lr: float = 0.005
    weight_decay: float = 0.01
    # method="logistic"
    c_grid: tuple[float, ...] = tuple(10.0**e for e in range(-6, 7))
    bisection_steps: int = 4
    val_fraction: float = 0.2
    max_iter: int = 1000

    def __post_init__(self):
        if self.method not in PROBE_METHODS:
            raise ValueError(f"linear probe method must be one of {PROBE_METHODS}, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("linear probe needs epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0")
        if not 0 < self.val_fraction < 1 or not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("linear probe needs 0 < val_fraction < 1 and a grid of positive C values")

    def protocol(self) -> dict:
        """The settings that define the result (stored in the result's ``protocol``)."""
        common = {"method": self.method, "normalize": self.normalize, "seed": self.seed, "ks": list(self.ks)}
        if self.method == "linear":
            names = ("epochs", "batch_size", "lr", "weight_decay")
        else:
            names = ("c_grid", "bisection_steps", "val_fraction", "max_iter")
        specific = {name: getattr(self, name) for name in names}
        return common | {k: list(v) if isinstance(v, tuple) else v for k, v in specific.items()}


def _features(x, normalize: bool) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return F.normalize(x, dim=-1) if normalize else x


def probe_optimizer(layer: torch.nn.Linear, config: LinearProbeConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight only (the authors exclude biases from decay)."""
    return torch.optim.AdamW(
        [
            {"params": [layer.weight], "weight_decay": config.weight_decay},
            {"params": [layer.bias], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )


def train_linear_probe(
    features, labels, num_classes: int, config: LinearProbeConfig = LinearProbeConfig()
) -> torch.nn.Linear:
    """Train the probe with the paper's protocol on (N, d) features; deterministic for a seed."""
    x = _features(features, config.normalize)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need (N, d) features and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    generator = torch.Generator().manual_seed(config.seed)
    layer = torch.nn.utils.skip_init(torch.nn.Linear, x.shape[1], num_classes)  # no global RNG draw
    bound = 1 / math.sqrt(x.shape[1])  # nn.Linear's default init, drawn from our generator
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    optimizer = probe_optimizer(layer, config)
    steps_per_epoch = math.ceil(len(y) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, config.lr, 0, total_steps)  # the authors': no warm-up
            loss = F.cross_entropy(layer(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return layer.eval()


def predict_ranks(logits, labels) -> np.ndarray:
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return positive_ranks(logits, F.one_hot(labels, logits.shape[1]).bool()).numpy()


def _sklearn_fit(x: np.ndarray, y: np.ndarray, c: float, config: LinearProbeConfig):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=config.max_iter, random_state=config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _sklearn_probe(x, y, config: LinearProbeConfig) -> tuple[object, dict]:
    """Choose C on a validation split (grid, then bisection in log C), refit on all of x."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(y))
    num_val = max(1, int(round(config.val_fraction * len(y))))
    val, fit = order[:num_val], order[num_val:]
    if len(fit) == 0 or len(np.unique(y[fit])) < 2:
        raise ValueError("the sklearn linear probe needs at least two classes in the training part")
    scores: dict[float, float] = {}

    def score(c: float) -> float:
        if c not in scores:
            scores[c] = float((_sklearn_fit(x[fit], y[fit], c, config).predict(x[val]) == y[val]).mean())
        return scores[c]

    grid = sorted(config.c_grid)
    for c in grid:
        score(c)
    # Best C (ties: the smaller C, i.e. the stronger regularisation), then bisect towards its neighbours.
    best = max(grid, key=lambda c: (scores[c], -c))
    position = grid.index(best)
    low = grid[position - 1] if position > 0 else best
    high = grid[position + 1] if position + 1 < len(grid) else best
    for _ in range(config.bisection_steps):
        candidates = {best}
        if low < best:
            candidates.add(math.sqrt(low * best))
        if high > best:
            candidates.add(math.sqrt(best * high))
        new_best = max(sorted(candidates), key=lambda c: (score(c), -c))
        if new_best < best:
            high, best = best, new_best
        elif new_best > best:
            low, best = best, new_best
        else:
            low, high = math.sqrt(low * best), math.sqrt(best * high)
    model = _sklearn_fit(x, y, best, config)
    info = {"C": best, "val_accuracy": scores[best], "num_val": int(num_val), "num_fits": len(scores) + 1}
    return model, info


def linear_probe(
    train_features, train_labels, test_features, test_labels, num_classes: int, config: LinearProbeConfig
) -> tuple[dict[str, float], list[dict], dict]:
    """Fit on the training features, score the test features: (metrics, per_class, fit info)."""
    ranks, info = probe_ranks(train_features, train_labels, test_features, test_labels, num_classes, config)
    metrics, per_class = topk_accuracy(ranks, np.asarray(test_labels, dtype=np.int64), config.ks, num_classes)
    return metrics, per_class, info


def probe_ranks(
    train_features, train_labels, test_features, test_labels, num_classes: int, config: LinearProbeConfig
) -> tuple[np.ndarray, dict]:
    """Fit on the training features; the rank of each test item's true class, and the fit info."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    for name, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}")
    if config.method == "linear":
        layer = train_linear_probe(train_features, train_labels, num_classes, config)
        with torch.no_grad():
            logits = layer(_features(test_features, config.normalize)).numpy()
        info: dict = {}
    else:
        x_train = _features(train_features, config.normalize).numpy()
        model, info = _sklearn_probe(x_train, train_labels, config)
        scores = model.decision_function(_features(test_features, config.normalize).numpy())
        logits = np.full((len(test_labels), num_classes), -np.inf, dtype=np.float64)
        if scores.ndim == 1:  # binary problem: one score for classes_[1]
            scores = np.stack([-scores, scores], axis=1)
        logits[:, model.classes_] = scores
        logits = np.nan_to_num(logits, neginf=np.finfo(np.float32).min)  # classes unseen in training
    return predict_ranks(logits, test_labels), info
