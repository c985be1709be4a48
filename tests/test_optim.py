import math

import pytest

from rankclip.models import create_model
from rankclip.optim import cosine_lr, make_optimizer


def test_warmup_then_cosine():
    base, warmup, total = 1.0, 10, 110
    assert cosine_lr(0, base, warmup, total) == pytest.approx(0.1)
    assert cosine_lr(9, base, warmup, total) == pytest.approx(1.0)
    assert cosine_lr(10, base, warmup, total) == pytest.approx(1.0)
    assert cosine_lr(60, base, warmup, total) == pytest.approx(0.5)
    assert cosine_lr(110, base, warmup, total) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(5, base, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_no_weight_decay_on_norms_biases_and_logit_scale():
    model = create_model("rankclip-tiny-vit")[0]
    optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.999), 1e-8)
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert "logit_scale" in plain_names
    assert all(not n.endswith("bias") and ".ln_" not in n for n in decayed_names)
    assert any(n.endswith("attn.in_proj_weight") for n in decayed_names)
    assert len(plain_names) + len(decayed_names) == len(list(model.parameters()))
