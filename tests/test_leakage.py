"""The calibrated leak threshold and the per-text null comparison, against hand computations."""
import numpy as np
import pytest

from memlens.leakage import FIXED_THRESHOLD, leak_threshold, null_threshold, text_leak


def test_null_threshold_by_hand():
    v = np.arange(1000, dtype=float)  # 0..999
    # 0.1% of 1000 = 1 token may lie above: the threshold is 998, only 999 exceeds it
    assert null_threshold([v[:500], v[500:]], 0.001) == 998.0
    assert null_threshold(v, 0.01) == 989.0  # 10 tokens (990..999) above
    # fewer tokens than 1/rate: none may exceed, the threshold is the maximum
    assert null_threshold([np.array([3.0, -1.0, 2.5])], 0.001) == 3.0
    # NaN and inf are not tokens of the null
    assert null_threshold([np.array([np.nan, 1.0, np.inf, 0.5])], 0.001) == 1.0
    assert null_threshold([np.array([np.nan])], 0.001) is None
    with pytest.raises(ValueError):
        null_threshold(v, 0.0)


def test_exceedance_rate_holds_with_ties():
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=20000), 1)  # many ties
    t = null_threshold(v, 0.001)
    assert (v > t).mean() <= 0.001


def test_leak_threshold_sources():
    mem, non = np.array([5.0, 6.0]), np.arange(10, dtype=float)
    got = leak_threshold([mem, non], [1, 0], attack="informia_token", rate=0.001)
    assert got["value"] == 9.0 and got["source"] == "non-member tokens" and got["n_tokens"] == 10 and got["n_texts"] == 1
    # no non-members: the population's tokens
    got = leak_threshold([mem], [1], attack="informia_token", population_tokens=[np.array([1.0, 2.0])])
    assert got["value"] == 2.0 and got["source"] == "population tokens"
    # nothing to calibrate on: the fixed level, said as such
    got = leak_threshold([mem], [1], attack="informia_token")
    assert got["value"] == FIXED_THRESHOLD and got["source"] == "fixed" and got["rate"] is None


def test_text_leak_by_hand():
    tokens = np.array([0.5, 3.0, 4.0, np.nan] + [0.0] * 96)  # 99 finite tokens, 2 above 2.0
    r = text_leak(tokens, 2.0, 0.01)
    assert r["n_tokens"] == 99 and r["leaked_tokens"] == 2 and r["leaked_total"] == 7.0 and r["above_threshold"] == 3.0
    assert r["expected_by_chance"] == pytest.approx(0.99)
    # P(X >= 2), X ~ Binomial(99, 0.01) = 1 - 0.99^99 - 99 * 0.01 * 0.99^98
    p = 1 - 0.99 ** 99 - 99 * 0.01 * 0.99 ** 98
    assert r["p_value"] == pytest.approx(p) and r["leaking"] is False  # 0.26 > 0.01
    many = text_leak(np.r_[np.full(6, 5.0), np.zeros(94)], 2.0, 0.01)
    assert many["leaking"] is True and many["p_value"] < 0.01
    none = text_leak(np.zeros(10), 2.0, 0.01)
    assert none["leaked_tokens"] == 0 and none["p_value"] == 1.0 and none["leaking"] is False
    assert text_leak(np.array([3.0]), 2.0, None)["leaking"] is None
