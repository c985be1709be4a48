"""Tests of rankclip/losses.py against open_clip and against slow, obvious references written with loops.

The references loop over ranks and over the rows of each rank ("local rows x global columns") and compute
ListMLE as the explicit sequential Plackett-Luce likelihood in float64, so they share no code with the
vectorised implementation. Ranks are simulated in one process by replacing ``gather_features`` with a
function that concatenates the other ranks' chunks around the local one (gradient flowing to all).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import open_clip
import pytest
import torch
import torch.nn.functional as F

import rankclip.losses as losses
from rankclip.losses import (
    LOSSES,
    AlipLoss,
    ClipLoss,
    CyClipLoss,
    RankClipLoss,
    build_loss,
    gather_features,
    list_mle,
    ranking_weight,
)

ALL_LOSSES = list(LOSSES)


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def unit_features(batch: int, dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1).to(dtype)


def quarter_features(batch: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Unit vectors with entries ±1/4 (d = 16): every dot product is an exact multiple of 1/8, so ties
    in the similarity matrices are exact whatever the order of summation."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (batch, 16), generator=generator).to(dtype) * 2 - 1
    return signs / 4


def triple(batch: int, dim: int = 5, seed: int = 0, dtype=torch.float64):
    """Image, text and caption features (captions are noisy texts, so the ALIP gates are non-trivial)."""
    image = unit_features(batch, dim, seed, dtype)
    text = unit_features(batch, dim, seed + 1, dtype)
    caption = F.normalize(text.double() + 0.7 * unit_features(batch, dim, seed + 2), dim=1).to(dtype)
    return image, text, caption


OPTIONS = {
    "rankclip": {"num_epochs": 4},
    "rankclip_cross": {"num_epochs": 4},
    "rankclip_in": {"num_epochs": 4},
}
EPOCH = 3  # w(3) = clip(3·2/3, 0, 2) = 2 with num_epochs = 4


def run_ranks(name, image, text, caption, scale, *, world_size=1, epoch=EPOCH, modules=None, **options):
    """The mean over simulated ranks of each rank's loss on its chunk of the global batch.

    Returns (mean loss, the per-rank modules, the per-rank terms)."""
    chunks = [x.chunk(world_size) for x in (image, text, caption)]

    def fake_gather(*features, rank, world_size):
        assert world_size == len(chunks[0])
        gathered = []
        for local, parts in zip(features, chunks, strict=False):
            assert torch.equal(local, parts[rank]), "gather_features must get the local features"
            gathered.append(torch.cat([*parts[:rank], local, *parts[rank + 1 :]]))
        return tuple(gathered)

    options = {**OPTIONS.get(name, {}), **options}
    modules = modules or [
        build_loss(name, rank=r, world_size=world_size, **options) for r in range(world_size)
    ]
    total, all_terms = 0.0, []
    with pytest.MonkeyPatch.context() as patch:
        if world_size > 1:
            patch.setattr(losses, "gather_features", fake_gather)
        for r, module in enumerate(modules):
            loss, terms = module(
                chunks[0][r], chunks[1][r], scale, epoch=epoch, caption_features=chunks[2][r]
            )
            total = total + loss / world_size
            all_terms.append(terms)
    return total, modules, all_terms


# ----------------------------------------------------------------------------------------------------
# Slow references (float64, Python loops)
# ----------------------------------------------------------------------------------------------------


def dot(a, b):
    return (a * b).sum()


def mean_over_ranks(row_loss: Callable[[int], torch.Tensor], batch: int, world_size: int):
    """Mean over ranks of the mean over each rank's local rows."""
    local = batch // world_size
    per_rank = [
        sum(row_loss(i) for i in range(r * local, (r + 1) * local)) / local for r in range(world_size)
    ]
    return sum(per_rank) / world_size


def ref_cross_entropy(i, X, Y, scale):
    """-log softmax_k(s⟨X_i, Y_k⟩) at k = i."""
    logits = [scale * dot(X[i], Y[k]) for k in range(len(Y))]
    return -torch.log(torch.exp(logits[i]) / sum(torch.exp(x) for x in logits))


def ref_plackett_luce_nll(p, q, perm=None):
    """-log P(order of q | scores p), the sequential Plackett-Luce likelihood; ties in q keep the order of
    `perm` (the column order when None)."""
    columns = list(range(len(p))) if perm is None else [int(j) for j in perm]
    order = sorted(columns, key=lambda j: -float(torch.as_tensor(q[j]).detach()))  # Python's sort is stable
    ranked = [p[j] for j in order]
    nll = 0.0
    for r in range(len(ranked)):
        nll = nll - torch.log(torch.exp(ranked[r]) / sum(torch.exp(x) for x in ranked[r:]))
    return nll


def ref_clip_row(i, I, T, s):  # noqa: E741
    return (ref_cross_entropy(i, I, T, s) + ref_cross_entropy(i, T, I, s)) / 2


def ref_loss(name, I, T, C, s, *, world_size=1, epoch=EPOCH, perm=None, E=(1.0, 1.0, 1.0), **options):  # noqa: E741
    """The reference value of loss `name` on the global batch."""
    B = len(I)
    if name == "clip":
        return mean_over_ranks(lambda i: ref_clip_row(i, I, T, s), B, world_size)
    if name == "cyclip":
        lam_in, lam_cross = options.get("lambda_in", 0.25), options.get("lambda_cross", 0.25)

        def row(j):
            inmodal = sum((dot(I[j], I[k]) - dot(T[j], T[k])) ** 2 for k in range(B))
            crossmodal = sum((dot(I[j], T[k]) - dot(I[k], T[j])) ** 2 for k in range(B))
            return ref_clip_row(j, I, T, s) + lam_in * inmodal + lam_cross * crossmodal

        return mean_over_ranks(row, B, world_size)
    if name.startswith("rankclip"):
        lam_cross = 0.0 if name == "rankclip_in" else options.get("lambda_cross", 1.0)
        lam_in = 0.0 if name == "rankclip_cross" else options.get("lambda_in", 1.0)
        scale = options.get("list_scale", 1 / 32)
        w = ranking_weight(epoch, options.get("num_epochs", 4), options.get("schedule", "code"))

        def row(i):
            S_row = [s * dot(I[i], T[k]) for k in range(B)]  # row i of S
            S_col = [s * dot(I[k], T[i]) for k in range(B)]  # row i of Sᵀ
            A_row = [s * dot(I[i], I[k]) for k in range(B)]
            C_row = [s * dot(T[i], T[k]) for k in range(B)]
            L_cross = (
                ref_plackett_luce_nll(S_row, S_col, perm) + ref_plackett_luce_nll(S_col, S_row, perm)
            ) * scale
            L_in = (
                ref_plackett_luce_nll(A_row, C_row, perm) + ref_plackett_luce_nll(C_row, A_row, perm)
            ) * scale
            return ref_clip_row(i, I, T, s) + w * (lam_cross * L_cross + lam_in * L_in) / B

        return mean_over_ranks(row, B, world_size)
    if name == "alip":
        m = options.get("momentum", 0.99)
        with torch.no_grad():
            tc = [float(dot(T[i], C[i])) for i in range(B)]
            it = [float(dot(T[i], I[i])) for i in range(B)]
            ic = [float(dot(C[i], I[i])) for i in range(B)]
            E_tc, E_it, E_ic = (m * e + (1 - m) * sum(x) / B for e, x in zip(E, (tc, it, ic), strict=True))
            W_s_raw = [math.exp(2 * (x - E_tc)) for x in tc]
            W_s = [min(1.0, w) for w in W_s_raw]
            W_it = [math.exp(2 * (x - E_it)) if w < 1 else 1.0 for x, w in zip(it, W_s_raw, strict=True)]
            W_ic = [math.exp(2 * (x - E_ic)) if w < 1 else 1.0 for x, w in zip(ic, W_s_raw, strict=True)]

        def row(i):
            ce_text = (ref_cross_entropy(i, I, T, s) + ref_cross_entropy(i, T, I, s)) / 2
            ce_caption = (ref_cross_entropy(i, I, C, s) + ref_cross_entropy(i, C, I, s)) / 2
            return W_s[i] * W_it[i] * ce_text + W_s[i] * W_ic[i] * ce_caption

        return mean_over_ranks(row, B, world_size)
    raise AssertionError(name)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


# ----------------------------------------------------------------------------------------------------
# CLIP vs open_clip
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_matches_open_clip(batch, scale, dtype):
    image, text, _ = triple(batch, dim=16, seed=batch, dtype=dtype)
    logit_scale = torch.tensor(scale, dtype=dtype)
    ours, terms = ClipLoss()(image, text, logit_scale)
    theirs = open_clip.ClipLoss()(image, text, logit_scale)
    assert ours.dtype == dtype and ours.dim() == 0
    # S = s·(I·Tᵀ) here, (s·I)·Tᵀ in open_clip: float32 results may differ in the last bit (1e-7 relative)
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(ours, theirs, **tolerance)
    assert set(terms) == {"clip"}


# ----------------------------------------------------------------------------------------------------
# ListMLE
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_perm", [False, True])
def test_list_mle_matches_sequential_plackett_luce(with_perm):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 7, generator=generator, dtype=torch.float64) * 3
    targets = torch.randint(0, 3, (4, 7), generator=generator).double()  # many ties
    perm = torch.randperm(7, generator=generator) if with_perm else None
    expected = (
        sum(ref_plackett_luce_nll(list(p), list(q), perm) for p, q in zip(scores, targets, strict=True)) / 4
    )
    torch.testing.assert_close(list_mle(scores, targets, perm), expected, rtol=1e-12, atol=1e-12)
    # float32 input: computed in float32, same value to float32 precision
    result32 = list_mle(scores.float(), targets.float(), perm)
    assert result32.dtype == torch.float32 and result32.dim() == 0
    torch.testing.assert_close(result32, expected.float(), rtol=1e-5, atol=1e-5)


def test_list_mle_ties_follow_the_permutation():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    targets = torch.zeros(1, 3)  # all tied: the order is the column order (or the permutation's)
    assert list_mle(scores, targets) == pytest.approx(
        float(ref_plackett_luce_nll(list(scores[0]), [0, 0, 0]))
    )
    perm = torch.tensor([2, 0, 1])
    expected = float(ref_plackett_luce_nll(list(scores[0]), [0, 0, 0], perm))
    assert list_mle(scores, targets, perm) == pytest.approx(expected)
    assert list_mle(scores, targets, perm) != pytest.approx(float(list_mle(scores, targets)))


def test_list_mle_uses_only_the_order_of_the_targets():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 6, generator=generator, requires_grad=True)
    targets = torch.randn(3, 6, generator=generator, requires_grad=True)
    loss = list_mle(scores, targets)
    torch.testing.assert_close(loss, list_mle(scores, torch.exp(3 * targets) + 5))  # monotone transform
    loss.backward()
    assert targets.grad is None and scores.grad is not None


def test_list_mle_is_computed_in_log_space():
    """Probabilities of exp(-200) underflow in float32: a product-of-probabilities ListMLE gives inf."""
    scores = torch.tensor([[0.0, -100.0, -200.0]], requires_grad=True)
    same_order = torch.tensor([[3.0, 2.0, 1.0]])
    assert float(list_mle(scores.detach(), same_order)) == pytest.approx(0.0, abs=1e-6)
    reversed_loss = list_mle(scores, same_order.flip(1))  # Σ_r [log Σ_{r'≥r} e^p − p_r] = 200 + 100 + 0
    assert float(reversed_loss.detach()) == pytest.approx(300.0)
    reversed_loss.backward()
    assert torch.isfinite(scores.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        list_mle(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------------------------------
# The fast ListMLE (rankclip/listmle.py) vs the previous implementation (autograd through logcumsumexp)
# ----------------------------------------------------------------------------------------------------


def slow_list_mle(scores, targets, tie_perm=None):
    """The previous ``list_mle``: stable sort of the tie-permuted targets, ``logcumsumexp`` and autograd."""
    dtype = torch.promote_types(scores.dtype, torch.float32)
    P, Q = scores.to(dtype), targets.detach().to(dtype)
    if tie_perm is not None:
        P, Q = P[:, tie_perm], Q[:, tie_perm]
    order = torch.sort(Q, dim=1, descending=True, stable=True).indices
    P_sorted = P.gather(1, order)
    P_sorted = P_sorted - P_sorted.max(dim=1, keepdim=True).values.detach()
    log_tail_sums = torch.logcumsumexp(P_sorted.flip(1), dim=1).flip(1)
    return (log_tail_sums - P_sorted).sum(dim=1).mean()


IMPLEMENTATIONS = ["numba", "torch"]
# float64: the fast path sums in float64 too; float32: the old path rounds every logcumsumexp step to float32
FAST_TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def list_inputs(rows, length, scale, seed, dtype, ties=False):
    """Scores s·⟨x_i, y_j⟩ of unit vectors and targets correlated with them (or with many exact ties)."""
    image, text = unit_features(rows, 8, seed), unit_features(length, 8, seed + 1)
    scores = scale * image @ text.T
    if ties:
        targets = torch.randint(0, 3, (rows, length), generator=torch.Generator().manual_seed(seed)).double()
    else:
        targets = scores + scale * unit_features(rows, length, seed + 2)
    return scores.to(dtype), targets.to(dtype)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rows", "length"), [(1, 1), (2, 2), (5, 7), (64, 64)])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
@pytest.mark.parametrize("ties", [False, True])
def test_fast_list_mle_matches_the_previous_implementation(implementation, dtype, rows, length, scale, ties):
    scores, targets = list_inputs(rows, length, scale, seed=rows + length, dtype=dtype, ties=ties)
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(length))
    for tie_perm in (None, perm):
        fast_scores, slow_scores = leaves(scores, scores)
        tie_order = torch.arange(length) if tie_perm is None else tie_perm
        fast = losses.list_mle_rows(fast_scores, targets, tie_order, implementation)
        slow = slow_list_mle(slow_scores, targets, tie_perm)
        assert fast.dtype == dtype and fast.dim() == 0
        torch.testing.assert_close(fast, slow, **FAST_TOLERANCE[dtype])
        fast.backward()
        slow.backward()
        torch.testing.assert_close(fast_scores.grad, slow_scores.grad, **FAST_TOLERANCE[dtype])
    # list_mle itself takes the default implementation (numba on CPU)
    torch.testing.assert_close(
        list_mle(scores, targets, perm), slow_list_mle(scores, targets, perm), **FAST_TOLERANCE[dtype]
    )


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fast_list_mle_gradcheck(implementation):
    scores, targets = list_inputs(4, 6, 100.0, seed=20, dtype=torch.float64, ties=True)
    wide = torch.tensor([[0.0, -300.0, 400.0, -500.0, 5.0, 1.0]], dtype=torch.float64)  # range 900
    scores = torch.cat([scores, wide]).requires_grad_()
    targets = torch.cat([targets, torch.tensor([[1.0, 2.0, 0.0, 3.0, 1.0, 1.0]], dtype=torch.float64)])
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(21))

    def fast(scores):
        return losses.list_mle_rows(scores, targets, perm, implementation)

    assert torch.autograd.gradcheck(fast, (scores,))
    torch.testing.assert_close(fast(scores), slow_list_mle(scores, targets, perm), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fast_list_mle_wide_rows_and_no_grad(implementation):
    """Rows spanning more than float64's exp range (the numba kernel then sums in log space), long lists,
    and a forward without gradient."""
    generator = torch.Generator().manual_seed(22)
    scores = torch.randn(3, 300, generator=generator, dtype=torch.float64) * 400
    targets = torch.randn(3, 300, generator=generator, dtype=torch.float64)
    targets[:, :100] = 0.0  # ties
    targets[0, 100] = -0.0  # ties with +0.0
    expected = slow_list_mle(scores, targets)  # float64: at |P| ~ 1000 float32 itself is 1e-4 off
    fast_P, slow_P = leaves(scores, scores)
    got = losses.list_mle_rows(fast_P, targets, torch.arange(300), implementation)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    got.backward()
    slow_list_mle(slow_P, targets).backward()
    torch.testing.assert_close(fast_P.grad, slow_P.grad, rtol=1e-10, atol=1e-10)
    no_grad = losses.list_mle_rows(scores.float(), targets.float(), torch.arange(300), implementation)
    assert not no_grad.requires_grad and no_grad.dtype == torch.float32
    torch.testing.assert_close(no_grad, expected.float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="implementation"):
        losses.list_mle_rows(scores, targets, torch.arange(300), "cuda")


@pytest.mark.parametrize("name", ["rankclip", "rankclip_cross", "rankclip_in"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("batch", "world_size", "scale", "tied"),
    [
        (1, 1, 1 / 0.07, False),
        (2, 1, 100.0, False),
        (8, 1, 100.0, True),
        (8, 2, 1 / 0.07, True),
        (48, 3, 100.0, False),
    ],
)
def test_rankclip_with_fast_list_mle_matches_the_previous_implementation(
    name, dtype, batch, world_size, scale, tied
):
    """Values and gradients (features and logit scale) of the RankCLIP losses, fast ListMLE vs the old one."""
    features = tied_batch(batch) if tied else triple(batch, dim=16, seed=23)
    results = []
    for list_mle_fn in (losses.list_mle, slow_list_mle):
        inputs = leaves(*(x.to(dtype) for x in features), torch.tensor(scale, dtype=dtype))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(losses, "list_mle", list_mle_fn)
            total, _, terms = run_ranks(name, *inputs, world_size=world_size)
        grads = torch.autograd.grad(total, [inputs[0], inputs[1], inputs[3]])
        results.append((total, [t["rank"] for t in terms], grads))
    (fast, fast_terms, fast_grads), (slow, slow_terms, slow_grads) = results
    torch.testing.assert_close(fast, slow, **FAST_TOLERANCE[dtype])
    torch.testing.assert_close(fast_terms, slow_terms, **FAST_TOLERANCE[dtype])
    for got, want in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(got, want, **FAST_TOLERANCE[dtype])


# ----------------------------------------------------------------------------------------------------
# Every loss vs its reference, on one and several (simulated) ranks
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize(("batch", "world_size"), [(1, 1), (6, 1), (6, 2), (6, 3)])
def test_loss_matches_reference(name, batch, world_size):
    image, text, caption = leaves(*triple(batch, seed=3))
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ours, modules, terms = run_ranks(name, image, text, caption, scale, world_size=world_size)
    ours_grads = torch.autograd.grad(ours, [image, text, caption, scale], allow_unused=True)

    ref_inputs = leaves(image, text, caption, scale)
    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(0))  # tie_seed 0, first call
    expected = ref_loss(name, *ref_inputs, world_size=world_size, perm=perm)
    expected_grads = torch.autograd.grad(expected, ref_inputs, allow_unused=True)

    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    for got, want in zip(ours_grads, expected_grads, strict=True):
        if want is None:
            assert got is None or torch.all(got == 0)
        else:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    for rank_terms in terms:  # terms are detached and named
        assert all(not value.requires_grad for value in rank_terms.values())
        assert "clip" in rank_terms


def test_terms_add_up_to_the_total():
    image, text, caption = triple(8, seed=4, dtype=torch.float32)
    scale = torch.tensor(1 / 0.07)
    for name in ALL_LOSSES:
        total, terms = build_loss(name, **OPTIONS.get(name, {}))(
            image, text, scale, epoch=EPOCH, caption_features=caption
        )
        if name == "clip":
            parts = terms["clip"]
        elif name == "cyclip":
            parts = terms["clip"] + 0.25 * terms["cyclip_in"] + 0.25 * terms["cyclip_cross"]
        elif name == "alip":
            parts = terms["alip_text"] + terms["alip_caption"]
        else:
            assert float(terms["rank_weight"]) == 2.0
            parts = terms["clip"] + terms["rank"]
            lam_cross, lam_in = float(name != "rankclip_in"), float(name != "rankclip_cross")
            rank = 2.0 * (lam_cross * terms["rank_cross"] + lam_in * terms["rank_in"]) / 8
            torch.testing.assert_close(terms["rank"], rank)
        torch.testing.assert_close(total.detach(), parts, msg=name)


# ----------------------------------------------------------------------------------------------------
# RankCLIP: ties, the ablations, large batches
# ----------------------------------------------------------------------------------------------------


def tied_batch(batch=8):
    """±1/4 features with duplicated text rows (the same caption for several images)."""
    image = quarter_features(batch, seed=5)
    text = quarter_features(batch, seed=6)
    text[batch // 2 :] = text[: batch // 2]  # rows in different (simulated) ranks are duplicates
    return image, text, text.clone()


@pytest.mark.parametrize("world_size", [1, 2])
def test_rankclip_ties_are_broken_by_the_seeded_permutation(world_size):
    image, text, caption = tied_batch()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    first, modules, _ = run_ranks("rankclip", image, text, caption, scale, world_size=world_size, tie_seed=7)
    again, _, _ = run_ranks("rankclip", image, text, caption, scale, world_size=world_size, tie_seed=7)
    assert float(first) == float(again)  # fresh modules, same seed: identical
    perm0 = torch.randperm(8, generator=torch.Generator().manual_seed(7 + 0))
    torch.testing.assert_close(first, ref_loss("rankclip", image, text, caption, scale, perm=perm0))

    # the next call uses seed + 1 (on every rank), and the counter is a buffer
    second, _, _ = run_ranks("rankclip", image, text, caption, scale, world_size=world_size, modules=modules)
    perm1 = torch.randperm(8, generator=torch.Generator().manual_seed(7 + 1))
    torch.testing.assert_close(second, ref_loss("rankclip", image, text, caption, scale, perm=perm1))
    assert all(int(m.calls) == 2 for m in modules)
    assert float(first) != float(second)  # the ties matter, so the permutation does

    no_seed, _, _ = run_ranks("rankclip", image, text, caption, scale, world_size=world_size, tie_seed=None)
    torch.testing.assert_close(no_seed, ref_loss("rankclip", image, text, caption, scale, perm=None))


def test_rankclip_tie_counter_survives_state_dict():
    image, text, caption = tied_batch()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    module = RankClipLoss(num_epochs=4)
    for _ in range(3):
        module(image, text, scale, epoch=EPOCH)
    state = module.state_dict()
    assert int(state["calls"]) == 3 and state["calls"].dtype == torch.int64
    resumed = RankClipLoss(num_epochs=4)
    resumed.load_state_dict(state)
    torch.testing.assert_close(
        resumed(image, text, scale, epoch=EPOCH)[0], module(image, text, scale, epoch=EPOCH)[0]
    )
    assert int(resumed.calls) == int(module.calls) == 4
    module.eval()  # evaluation calls do not advance the counter
    module(image, text, scale, epoch=EPOCH)
    assert int(module.calls) == 4


@pytest.mark.parametrize(("name", "kept"), [("rankclip_cross", "rank_cross"), ("rankclip_in", "rank_in")])
def test_ablations_compute_only_the_remaining_term(name, kept, monkeypatch):
    image, text, caption = triple(6, seed=8)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    full_total, full_terms = RankClipLoss(num_epochs=4)(image, text, scale, epoch=EPOCH)
    calls = []
    monkeypatch.setattr(losses, "list_mle", lambda *args: calls.append(1) or list_mle(*args))
    total, terms = build_loss(name, num_epochs=4)(image, text, scale, epoch=EPOCH)
    assert len(calls) == 2  # the zeroed term is skipped, not computed and multiplied by 0
    dropped = {"rank_cross", "rank_in"} - {kept}
    assert float(terms[dropped.pop()]) == 0.0
    torch.testing.assert_close(terms[kept], full_terms[kept])
    torch.testing.assert_close(total, full_terms["clip"] + 2.0 * full_terms[kept] / 6)
    torch.testing.assert_close(total, ref_loss(name, image, text, caption, scale))
    assert full_total > full_terms["clip"]


def test_rankclip_scale_100_long_lists_stay_finite(monkeypatch):
    """s = 100 and a global batch of 4096 (the rank holds 256 rows of it, as on 16 GPUs): no inf/nan."""
    world_size, rank, batch = 16, 3, 4096
    generator = torch.Generator().manual_seed(9)
    image = F.normalize(torch.randn(batch, 64, generator=generator), dim=1).requires_grad_()
    text = F.normalize(torch.randn(batch, 64, generator=generator), dim=1).requires_grad_()
    scale = torch.tensor(100.0, requires_grad=True)
    monkeypatch.setattr(losses, "gather_features", lambda *features, rank, world_size: (image, text))
    local = slice(rank * 256, (rank + 1) * 256)
    loss_fn = RankClipLoss(rank=rank, world_size=world_size, num_epochs=64)
    total, terms = loss_fn(image[local], text[local], scale, epoch=64)
    assert torch.isfinite(total) and torch.isfinite(terms["rank_cross"]) and torch.isfinite(terms["rank_in"])
    assert float(terms["rank_cross"]) > 0 and float(terms["rank_in"]) > 0
    total.backward()
    for grad in (image.grad, text.grad, scale.grad):
        assert torch.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_low_precision_features(name, dtype):
    image, text, caption = triple(32, dim=16, seed=10, dtype=torch.float32)
    scale = torch.tensor(1 / 0.07)
    options = OPTIONS.get(name, {})
    reference, _ = build_loss(name, **options)(image, text, scale, epoch=EPOCH, caption_features=caption)
    low = [x.to(dtype).requires_grad_() for x in (image, text, caption)]
    total, terms = build_loss(name, **options)(
        low[0], low[1], scale.to(dtype), epoch=EPOCH, caption_features=low[2]
    )
    assert total.dtype == torch.float32
    assert torch.isfinite(total) and all(torch.isfinite(v).all() for v in terms.values())
    torch.testing.assert_close(total, reference, rtol=2e-2, atol=2e-2)
    total.backward()
    assert all(torch.isfinite(x.grad).all() for x in low[:2])


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_autocast_does_not_lower_the_loss_precision(name):
    image, text, caption = triple(16, dim=8, seed=11, dtype=torch.float32)
    scale = torch.tensor(1 / 0.07)
    options = OPTIONS.get(name, {})
    reference, _ = build_loss(name, **options)(image, text, scale, epoch=EPOCH, caption_features=caption)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = build_loss(name, **options)(image, text, scale, epoch=EPOCH, caption_features=caption)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, reference, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("batch", [4, 5])
def test_gradcheck(name, batch):
    image, text, caption = leaves(*triple(batch, dim=3, seed=12 + batch))
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    loss_fn = build_loss(name, **OPTIONS.get(name, {}))
    if name == "alip":
        # The gates are constants of the gradient (no_grad); with low running means they are all 1, so the
        # loss is a smooth function of the features. Freeze the running means (eval) for gradcheck.
        loss_fn.eval()
        for buffer in (loss_fn.E_tc, loss_fn.E_it, loss_fn.E_ic):
            buffer.fill_(-5.0)

    def total(image, text, caption, scale):
        return loss_fn(image, text, scale, epoch=EPOCH, caption_features=caption)[0]

    assert torch.autograd.gradcheck(total, (image, text, caption, scale))


def test_gradcheck_alip_logit_scale_with_active_gates():
    """With the initial running means the gates are < 1 and vary per sample; they do not depend on s."""
    image, text, caption = triple(5, dim=3, seed=13)
    loss_fn = AlipLoss().eval()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    _, terms = loss_fn(image, text, scale, caption_features=caption)
    assert 0 < float(terms["alip_w_s_mean"]) < 1 and float(terms["alip_w_it_mean"]) != 1

    def total(scale):
        return loss_fn(image, text, scale, caption_features=caption)[0]

    assert torch.autograd.gradcheck(total, (scale,))


# ----------------------------------------------------------------------------------------------------
# ALIP
# ----------------------------------------------------------------------------------------------------


def test_alip_with_caption_equal_to_text_is_twice_clip():
    image, text = quarter_features(8, seed=14), quarter_features(8, seed=15)  # ⟨t, t⟩ = 1 exactly
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    total, terms = AlipLoss()(image, text, scale, caption_features=text.clone())
    for gate in ("alip_w_s_mean", "alip_w_it_mean", "alip_w_ic_mean"):
        assert float(terms[gate]) == 1.0
    clip, _ = ClipLoss()(image, text, scale)
    torch.testing.assert_close(total, 2 * clip)
    torch.testing.assert_close(terms["clip"], clip)


def test_alip_running_means_follow_the_momentum_rule_and_survive_state_dict():
    image, text, caption = triple(6, seed=16)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    loss_fn = AlipLoss(momentum=0.9)
    expected = {"E_tc": 1.0, "E_it": 1.0, "E_ic": 1.0}
    means = {
        "E_tc": float((text * caption).sum(1).mean()),
        "E_it": float((text * image).sum(1).mean()),
        "E_ic": float((caption * image).sum(1).mean()),
    }
    for _ in range(2):
        total, terms = loss_fn(image, text, scale, caption_features=caption)
        expected = {name: 0.9 * value + 0.1 * means[name] for name, value in expected.items()}
        for name, value in expected.items():
            assert float(getattr(loss_fn, name)) == pytest.approx(value, rel=1e-6)
            assert float(terms[f"alip_{name}"]) == pytest.approx(value, rel=1e-6)
    # the second call's loss uses the running means after two updates
    torch.testing.assert_close(
        total,
        ref_loss(
            "alip",
            image,
            text,
            caption,
            scale,
            E=(0.9 + 0.1 * means["E_tc"], 0.9 + 0.1 * means["E_it"], 0.9 + 0.1 * means["E_ic"]),
            momentum=0.9,
        ),
        rtol=1e-6,
        atol=1e-6,
    )

    state = loss_fn.state_dict()
    assert set(state) == {"E_tc", "E_it", "E_ic"}
    resumed = AlipLoss(momentum=0.9)
    resumed.load_state_dict(state)
    torch.testing.assert_close(
        resumed(image, text, scale, caption_features=caption)[0],
        loss_fn(image, text, scale, caption_features=caption)[0],
    )
    assert torch.equal(resumed.E_tc, loss_fn.E_tc)

    loss_fn.eval()  # evaluation does not move the running means
    before = loss_fn.E_it.clone()
    loss_fn(image, text, scale, caption_features=caption)
    assert torch.equal(loss_fn.E_it, before)


def test_alip_requires_captions():
    image, text, _ = triple(4, seed=17)
    with pytest.raises(ValueError, match="caption_features"):
        AlipLoss()(image, text, torch.tensor(10.0))
    with pytest.raises(ValueError, match="caption_features"):
        AlipLoss()(image, text, torch.tensor(10.0), caption_features=text[:2])


# ----------------------------------------------------------------------------------------------------
# Weight schedule, registry, gathering
# ----------------------------------------------------------------------------------------------------


def test_ranking_weight():
    assert ranking_weight(1, 64) == 0.0
    assert ranking_weight(2, 64) == pytest.approx(3 / 63)
    assert ranking_weight(22, 64) == pytest.approx(1.0)
    assert ranking_weight(43, 64) == 2.0 and ranking_weight(64, 64) == 2.0  # clipped at 2
    assert ranking_weight(1, 64, "paper") == pytest.approx(2 / 63)
    assert ranking_weight(11, 64, "paper") == pytest.approx(32 / 63)
    assert ranking_weight(64, 64, "paper") == 2.0
    assert ranking_weight(1, 1) == 0.0 and ranking_weight(1, 1, "paper") == 2.0  # E - 1 -> max(E - 1, 1)
    assert ranking_weight(2, 2) == 2.0
    assert ranking_weight(5, 64, "constant") == 1.0
    with pytest.raises(ValueError, match=r"'cosine'.*code.*paper.*constant"):
        ranking_weight(1, 64, "cosine")
    with pytest.raises(ValueError, match="epoch"):
        ranking_weight(0, 64)
    with pytest.raises(ValueError, match="num_epochs"):
        ranking_weight(1, 0)


def test_build_loss():
    assert set(LOSSES) == {"clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"}
    assert type(build_loss("clip")) is ClipLoss
    assert type(build_loss("alip", momentum=0.5)) is AlipLoss
    cyclip = build_loss("cyclip", lambda_in=0.5, rank=1, world_size=2)
    assert isinstance(cyclip, CyClipLoss) and (cyclip.lambda_in, cyclip.lambda_cross, cyclip.rank) == (
        0.5,
        0.25,
        1,
    )
    cross = build_loss("rankclip_cross", lambda_cross=2.0, num_epochs=8, tie_seed=None)
    assert isinstance(cross, RankClipLoss) and (cross.lambda_cross, cross.lambda_in) == (2.0, 0.0)
    inmodal = build_loss("rankclip_in")
    assert (inmodal.lambda_cross, inmodal.lambda_in) == (0.0, 1.0)

    with pytest.raises(
        ValueError, match=r"'siglip'.*clip, cyclip, alip, rankclip, rankclip_cross, rankclip_in"
    ):
        build_loss("siglip")
    with pytest.raises(TypeError, match="lambda_cros'"):
        build_loss("rankclip", lambda_cros=1.0)
    with pytest.raises(TypeError, match="lambda_in"):
        build_loss("rankclip_cross", lambda_in=1.0)
    with pytest.raises(TypeError, match="momentum"):
        build_loss("clip", momentum=0.9)
    for name, options, field in [
        ("rankclip", {"schedule": "linear"}, "schedule"),
        ("rankclip", {"lambda_in": -1.0}, "lambda_in"),
        ("rankclip", {"list_scale": 0.0}, "list_scale"),
        ("rankclip", {"num_epochs": 0}, "num_epochs"),
        ("rankclip", {"tie_seed": 1.5}, "tie_seed"),
        ("cyclip", {"lambda_cross": -0.1}, "lambda_cross"),
        ("alip", {"momentum": 1.0}, "momentum"),
        ("clip", {"rank": 2, "world_size": 2}, "rank"),
        ("clip", {"world_size": 0}, "world_size"),
    ]:
        with pytest.raises(ValueError, match=field):
            build_loss(name, **options)


def test_gather_features_single_process():
    image, text = torch.zeros(3, 4), torch.ones(3, 4)
    gathered = gather_features(image, text, rank=0, world_size=1)
    assert gathered[0] is image and gathered[1] is text
    with pytest.raises(RuntimeError, match="not initialised"):
        gather_features(image, text, rank=0, world_size=2)


def cyclip_authors_form(image, text, logit_scale, lambda_in, lambda_cross):
    """CyCLIP's loss as its authors' train.py writes it: the Gram matrices scaled by the logit scale s,
    squared differences averaged over the B x B entries, divided by s^2 and multiplied by B."""
    batch, s = len(image), logit_scale
    per_image = s * image @ text.T
    per_text = per_image.T
    target = torch.arange(batch)
    contrastive = (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2
    inmodal = (s * image @ image.T - s * text @ text.T).square().mean() / (s * s) * batch
    crossmodal = (per_image - per_text).square().mean() / (s * s) * batch
    return contrastive + lambda_in * inmodal + lambda_cross * crossmodal


@pytest.mark.parametrize(
    ("batch", "lambda_in", "lambda_cross"), [(1, 0.25, 0.25), (7, 0.25, 0.25), (32, 1.0, 0.0)]
)
def test_cyclip_equals_the_authors_form_in_value_and_gradient(batch, lambda_in, lambda_cross):
    """The demo's CyCLIP collapse (README, 'CyCLIP at demo scale') is not a different loss: ours and the
    authors' scaled-logit form agree, and so do their gradients (the s^2 cancels: none reaches s)."""
    ours_in = [unit_features(batch, 16, seed).requires_grad_() for seed in (1, 2)]
    theirs_in = [x.detach().clone().requires_grad_() for x in ours_in]
    scale = torch.tensor(14.3, dtype=torch.float64)
    loss = CyClipLoss(lambda_in=lambda_in, lambda_cross=lambda_cross)
    ours = loss(*ours_in, scale)[0]
    theirs = cyclip_authors_form(*theirs_in, scale, lambda_in, lambda_cross)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
