"""Linear probes (rankclip/eval/linear_probe.py): the paper's protocol, reproducibility, sklearn option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankclip.eval.linear_probe import (
    LinearProbeConfig,
    linear_probe,
    probe_optimizer,
    train_linear_probe,
)
from rankclip.optim import cosine_lr


def clusters(num_classes=4, per_class=30, dim=8, seed=0, spread=0.6):
    """Gaussian clusters around random centres: linearly separable up to the noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 2
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    return features.astype(np.float32), labels


def test_paper_protocol_learns_separable_classes():
    x, y = clusters()
    x_train, y_train, x_test, y_test = x[::2], y[::2], x[1::2], y[1::2]
    metrics, per_class, info = linear_probe(x_train, y_train, x_test, y_test, 4, LinearProbeConfig(ks=(1, 2)))
    assert metrics["top1"] > 0.9
    assert metrics["top2"] >= metrics["top1"]
    assert len(per_class) == 4 and info == {}


def test_same_seed_same_classifier_bit_for_bit_other_seed_differs():
    x, y = clusters()
    config = LinearProbeConfig(epochs=3, seed=7)
    a = train_linear_probe(x, y, 4, config)
    b = train_linear_probe(x, y, 4, config)
    c = train_linear_probe(x, y, 4, LinearProbeConfig(epochs=3, seed=8))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)


def test_probe_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_linear_probe(*clusters(), 4, LinearProbeConfig(epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_cosine_schedule_matches_the_authors_scheduler():
    """The probe uses training's cosine_lr with no warm-up: the authors' cosine_scheduler."""
    assert cosine_lr(0, 0.005, 0, 100) == 0.005
    assert cosine_lr(50, 0.005, 0, 100) == pytest.approx(0.0025)
    assert cosine_lr(25, 0.005, 0, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)) * 0.005)


def test_weight_decays_and_bias_does_not():
    layer = torch.nn.Linear(3, 2)
    groups = probe_optimizer(layer, LinearProbeConfig()).param_groups
    assert [(g["params"][0] is layer.weight, g["weight_decay"]) for g in groups] == [
        (True, 0.01),
        (False, 0.0),
    ]
    assert groups[0]["lr"] == 0.005 and groups[0]["betas"] == (0.9, 0.999)
    # Zero features give the weight no gradient: AdamW then only decays it, by lr_t * wd per step
    # (two steps of a 2-step cosine schedule: lr 0.1, then 0.05).
    x, y = np.zeros((4, 3), dtype=np.float32), np.array([0, 1, 0, 1])
    config = LinearProbeConfig(epochs=2, batch_size=4, lr=0.1, weight_decay=0.5, seed=0)
    trained = train_linear_probe(x, y, 2, config)
    generator = torch.Generator().manual_seed(0)
    initial = torch.empty(2, 3).uniform_(-1 / math.sqrt(3), 1 / math.sqrt(3), generator=generator)
    torch.testing.assert_close(trained.weight, initial * (1 - 0.1 * 0.5) * (1 - 0.05 * 0.5))


def test_sklearn_probe_searches_c_on_a_validation_split():
    x, y = clusters(per_class=20)
    config = LinearProbeConfig(method="logistic", c_grid=(0.01, 1.0, 100.0), bisection_steps=2, seed=0)
    metrics, _, info = linear_probe(x[::2], y[::2], x[1::2], y[1::2], 4, config)
    assert metrics["top1"] > 0.9
    assert 0.01 <= info["C"] <= 100.0
    assert info["num_val"] == 8
    again = linear_probe(x[::2], y[::2], x[1::2], y[1::2], 4, config)
    assert again[0] == metrics and again[2] == info


def test_sklearn_probe_with_a_class_missing_from_training():
    x, y = clusters(num_classes=3, per_class=10)
    keep = y != 2
    config = LinearProbeConfig(method="logistic", c_grid=(1.0,), bisection_steps=0)
    metrics, per_class, _ = linear_probe(x[keep], y[keep], x, y, 3, config)
    assert [row["accuracy"]["top1"] for row in per_class][2] == 0.0  # never predicted
    assert metrics["top1"] <= 2 / 3 + 1e-9


def test_bad_labels_and_config():
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        linear_probe(np.zeros((2, 3)), [0, 2], np.zeros((1, 3)), [0], 2, LinearProbeConfig())
    with pytest.raises(ValueError, match="method"):
        LinearProbeConfig(method="svm")
