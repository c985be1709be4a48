"""rankclip/eval/uncertainty.py against closed forms: the bootstrap of a mean of 1/0 hits is exactly a
binomial (n, p-hat) / n, so its percentile interval is the binomial's quantiles; identical runs differ by 0
with a zero-width interval; a paired difference on known disagreeing items is again a binomial."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rankclip.eval import uncertainty as u


def hits(n: int, k: int, seed: int = 0) -> np.ndarray:
    """n items, exactly k of them hits, in a random order."""
    array = np.zeros(n, dtype=bool)
    array[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return array


@pytest.mark.parametrize(("n", "k"), [(400, 120), (1000, 13), (250, 249)])
def test_interval_of_hits_is_the_binomials_quantiles(n, k):
    low, high = u.mean_interval(hits(n, k), resamples=20_000, seed=1)
    expected = stats.binom.ppf([0.025, 0.975], n, k / n) / n
    assert low == pytest.approx(expected[0], abs=1.5 / n) and high == pytest.approx(expected[1], abs=1.5 / n)
    assert low <= k / n <= high


def test_all_hits_or_none_give_a_zero_width_interval():
    assert u.mean_interval(np.ones(50)) == (1.0, 1.0)
    assert u.mean_interval(np.zeros(50)) == (0.0, 0.0)


def test_identical_runs_differ_by_zero_with_a_zero_width_interval():
    a = np.stack([hits(300, 90, seed=s) for s in range(3)])
    delta = u.paired_delta(a, a.copy())
    assert (delta.delta, delta.low, delta.high) == (0.0, 0.0, 0.0) and not delta.excludes_zero
    assert (delta.seeds, delta.items) == (3, 300)


def test_paired_difference_on_known_disagreements_is_a_binomial():
    """b = a except on m items where a hits and b misses: a - b is 1 on m items, 0 elsewhere."""
    n, m = 500, 40
    a = hits(n, 200)
    b = a.copy()
    b[np.flatnonzero(a)[:m]] = False
    delta = u.paired_delta(a, b, resamples=20_000, seed=2)
    expected = stats.binom.ppf([0.025, 0.975], n, m / n) / n
    assert delta.delta == pytest.approx(m / n)
    assert delta.low == pytest.approx(expected[0], abs=1.5 / n) and delta.high == pytest.approx(
        expected[1], abs=1.5 / n
    )
    assert delta.excludes_zero and str(delta).endswith("*")
    reverse = u.paired_delta(b, a, resamples=20_000, seed=2)
    assert (reverse.delta, reverse.low, reverse.high) == pytest.approx((-m / n, -delta.high, -delta.low))


def test_the_paired_interval_is_narrower_than_the_unpaired_one():
    """Two runs that share most hits: pairing cancels the items' difficulty."""
    a = hits(1000, 400)
    b = a.copy()
    b[np.flatnonzero(a)[:10]] = False
    b[np.flatnonzero(~a)[:30]] = True
    paired = u.paired_delta(a, b)
    a_low, a_high = u.mean_interval(a)
    assert paired.high - paired.low < (a_high - a_low) / 2


def test_seeds_are_pooled_per_item_with_one_draw_of_items():
    a = hits(200, 50)
    same = np.stack([a, a])
    assert np.array_equal(u.resampled_means(same, 300, seed=4), u.resampled_means(a, 300, seed=4))
    mixed = np.stack([a, ~a])  # every item: one hit in two seeds -> every resample's mean is 1/2
    assert np.allclose(u.resampled_means(mixed, 100), 0.5)


def test_seeded_and_reproducible():
    a = hits(300, 100)
    assert u.mean_interval(a, seed=5) == u.mean_interval(a, seed=5)
    assert u.mean_interval(a, seed=5) != u.mean_interval(a, seed=6)


def test_resampling_in_chunks_draws_what_one_draw_would(monkeypatch):
    a = hits(64, 20)
    whole = u.resampled_means(a, 50, seed=3)
    monkeypatch.setattr(u, "_CHUNK", 64 * 7)  # 7 resamples per chunk
    assert len(u.resampled_means(a, 50, seed=3)) == 50
    assert u.resampled_means(a, 50, seed=3)[:7].tolist() == pytest.approx(whole[:7].tolist())


def test_seed_spread():
    assert u.seed_spread([0.1, 0.2, 0.3]) == pytest.approx((0.2, 0.1, 3))
    assert u.seed_spread([0.4]) == (0.4, 0.0, 1)
    with pytest.raises(ValueError, match="no values"):
        u.seed_spread([])


@pytest.mark.parametrize("n", [1, 7, 8, 9, 50_000])
def test_packed_hits_round_trip(n):
    array = hits(n, n // 3)
    text = u.pack_hits(array)
    assert np.array_equal(u.unpack_hits(text), array)
    assert len(text) < n / 6 + 16


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="0/1"):
        u.pack_hits([0, 2, 1])
    with pytest.raises(ValueError, match="not packed hits"):
        u.unpack_hits("abc")
    with pytest.raises(ValueError, match="same"):
        u.paired_delta(np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="NaN"):
        u.mean_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="shape"):
        u.mean_interval([])
    with pytest.raises(ValueError, match="level"):
        u.mean_interval([1, 0], level=1.5)
