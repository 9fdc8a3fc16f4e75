"""The calibrated leak threshold and the per-text null comparison, against hand computations."""
import math

import numpy as np
import pytest
from scipy.stats import binom

from memlens.leakage import (
    DEFAULT_NULL_RATE,
    DEFAULT_TEXT_RATE,
    FIXED_THRESHOLD,
    flag_texts,
    leak_threshold,
    null_threshold,
    tail_statistic,
    text_flag_words,
    text_leak,
    text_null,
)


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
    # P(X >= 2), X ~ Binomial(99, 0.01) = 1 - 0.99^99 - 99 * 0.01 * 0.99^98: a length-adjusted score, not the flag
    tail = 1 - 0.99 ** 99 - 99 * 0.01 * 0.99 ** 98
    assert r["tail"] == pytest.approx(tail) and r["leaking"] is None and r["p_value"] is None  # no text-level null given
    assert tail_statistic(tokens, 2.0, 0.01) == (2, 99, pytest.approx(-math.log10(tail)), 3.0)
    assert tail_statistic(np.zeros(10), 2.0, 0.01) == (0, 10, 0.0, 0.0)
    # a tail far below double precision stays finite and keeps ordering by k
    assert math.isfinite(tail_statistic(np.full(3000, 5.0), 2.0, 0.001)[2])
    assert tail_statistic(np.full(3000, 5.0), 2.0, 0.001)[2] > tail_statistic(np.r_[np.full(2999, 5.0), 0.0], 2.0, 0.001)[2]
    assert text_leak(np.array([3.0]), 2.0, None)["leaking"] is None


def _texts(ks, n=100):
    """Texts of n tokens, the first k of each at 1.0 (above the threshold 0.5), the rest 0."""
    return [np.r_[np.ones(k), np.zeros(n - k)] for k in ks]


def test_text_null_and_the_conformal_flag_by_hand():
    # 19 null texts (non-members): 17 with no token above 0.5, one with 1, one with 2 (of 100)
    null_toks = _texts([0] * 17 + [1, 2])
    ids = [f"n{i}" for i in range(19)]
    null = text_null(null_toks, 0.5, 0.01, source="non-member texts", ids=ids, text_rate=0.05)
    s1, s2 = -math.log10(binom.sf(0, 100, 0.01)), -math.log10(binom.sf(1, 100, 0.01))
    assert null["rate"] == 0.05 and null["n_texts"] == 19 and null["source"] == "non-member texts"
    assert [r[0] for r in null["null"]] == ["n18", "n17"]  # most extreme first; the 17 without a token above are implicit
    assert null["null"][0][1:] == [pytest.approx(s2), 1.0] and null["null"][1][1:] == [pytest.approx(s1), 0.5]
    # a member with 3 tokens above: no null text is as extreme, p = (1 + 0) / (19 + 1) = 0.05 <= 0.05: leaking
    r = text_leak(_texts([3])[0], 0.5, 0.01, null)
    assert (r["null_as_extreme"], r["null_n"], r["p_value"], r["leaking"]) == (0, 19, 0.05, True)
    # a member exactly as extreme as n18 (2 tokens, 1 bit above): 1 null text ties, p = 2 / 20: not leaking
    r = text_leak(_texts([2])[0], 0.5, 0.01, null)
    assert (r["null_as_extreme"], r["p_value"], r["leaking"]) == (1, 0.1, False)
    # the same 2 tokens with more bits above the threshold beat the tie
    assert text_leak(np.r_[1.0, 2.0, np.zeros(98)], 0.5, 0.01, null)["leaking"] is True
    # n18 itself, judged against the other 18 (leave-one-out): nothing as extreme, p = 1 / 19 > 0.05: not flagged
    r = text_leak(null_toks[18], 0.5, 0.01, null, "n18")
    assert (r["null_as_extreme"], r["null_n"], r["p_value"], r["leaking"]) == (0, 18, pytest.approx(1 / 19), False)
    # a text with no token above: every null text is at least as extreme
    r = text_leak(np.zeros(100), 0.5, 0.01, null, "n0")
    assert (r["null_as_extreme"], r["null_n"], r["p_value"]) == (18, 18, 1.0)
    # flag_texts leaves each non-member out of its own null
    assert flag_texts(null_toks + _texts([3]), ids + ["m"], [0] * 19 + [1], 0.5, 0.01, null) == [False] * 19 + [True]
    words = text_flag_words({**null, "flagged": {"members": [1, 1], "non-members": [0, 19]}})
    assert "at most 5% of the 19 non-member texts" in words and "1 of 1 members, 0 of 19 non-members" in words


def test_text_rate_raised_to_what_the_null_resolves():
    null = text_null(_texts([0] * 48), 0.5, 0.01, source="non-member texts", ids=[str(i) for i in range(48)])
    assert null["requested_rate"] == DEFAULT_TEXT_RATE and null["rate"] == 1 / 49  # 48 texts: nothing finer than 1/49
    words = text_flag_words(null)
    assert "at most 2.04% of the 48 non-member texts" in words and "(1% asked; 48 texts resolve no finer)" in words
    assert text_null(_texts([0] * 144), 0.5, 0.01, source="non-member texts")["rate"] == 0.01
    few = text_null(_texts([0] * 10), 0.5, 0.01, source="population texts")
    assert few["rate"] is None and "10 population texts" in few["reason"]
    assert text_leak(_texts([50])[0], 0.5, 0.01, few)["leaking"] is None
    fixed = text_null(_texts([0] * 200), FIXED_THRESHOLD, None, source="none")
    assert fixed["rate"] is None and text_flag_words(fixed).startswith("texts are not flagged as leaking")
    with pytest.raises(ValueError):
        text_null(_texts([0]), 0.5, 0.01, source="x", text_rate=0.0)


def _correlated_texts(rng, n_texts, scale=1.0):
    """Token scores with the dependence real texts have: a per-text level (a text the model happens to predict
    well is high throughout) plus AR(1) noise along the text, lengths 60-240 tokens."""
    out = []
    for _ in range(n_texts):
        n = int(rng.integers(60, 240))
        e = rng.normal(size=n)
        ar = np.empty(n)
        ar[0] = e[0]
        for t in range(1, n):
            ar[t] = 0.8 * ar[t - 1] + 0.6 * e[t]
        out.append(scale * (rng.normal(0, 0.8) + ar))
    return out


def test_calibrated_flag_holds_its_rate_where_the_binomial_tail_does_not():
    rng = np.random.default_rng(7)
    non, fresh = _correlated_texts(rng, 500), _correlated_texts(rng, 2000)
    ids = [f"n{i}" for i in range(len(non))]
    lt = leak_threshold(non, [0] * len(non), attack="informia_token")
    thr, rate = lt["value"], lt["rate"]
    # the old flag (binomial tail below the token rate, tokens taken as independent) flags far more than 0.1%
    old = np.mean([text_leak(t, thr, rate)["tail"] < rate for t in non + fresh])
    assert old > 5 * DEFAULT_NULL_RATE
    null = text_null(non, thr, rate, source="non-member texts", ids=ids)
    assert null["rate"] == DEFAULT_TEXT_RATE
    # the non-members themselves, each left out of its own null: at most the rate (no ties among them here)
    in_sample = np.mean(flag_texts(non, ids, [0] * len(non), thr, rate, null))
    assert in_sample <= DEFAULT_TEXT_RATE
    # fresh non-members against this null: the rate plus binomial noise (of the 500 calibration texts and the 2000 fresh ones)
    a = DEFAULT_TEXT_RATE
    noise = 3 * math.sqrt(a * (1 - a) / len(non)) + 3 * math.sqrt(a * (1 - a) / len(fresh))
    out_of_sample = np.mean(flag_texts(fresh, [f"f{i}" for i in range(len(fresh))], [None] * len(fresh), thr, rate, null))
    assert out_of_sample <= a + noise
    # members seen 16 times: a few spans of memorized tokens (+10 bits) in the same kind of text are flagged
    mem = _correlated_texts(rng, 200)
    for t in mem:
        for start in rng.choice(len(t) - 4, size=2, replace=False):
            t[start:start + 4] += 10.0
    assert np.mean(flag_texts(mem, [f"m{i}" for i in range(200)], [1] * 200, thr, rate, null)) >= 0.9


def test_kept_null_rows_decide_every_flag(monkeypatch):
    # 200 null texts, most with tokens above 0.5 (k = 0..6, bits all different); results.json keeps only the most
    # extreme rows, enough that every flag (leave-one-out included) is what the full null gives
    rng = np.random.default_rng(3)
    null_toks = [np.r_[0.6 + rng.random(i % 7), np.zeros(60 - i % 7)] for i in range(200)]
    ids = [f"n{i}" for i in range(200)]
    others = [np.r_[0.6 + rng.random(k), np.zeros(60 - k)] for k in range(12)]
    full = text_null(null_toks, 0.5, 0.01, source="non-member texts", ids=ids)
    assert full["n_above"] == len(full["null"]) == 171
    import memlens.leakage as leakage

    monkeypatch.setattr(leakage, "MAX_NULL_ROWS", 5)
    kept = text_null(null_toks, 0.5, 0.01, source="non-member texts", ids=ids)
    assert kept["n_above"] == 171 and kept["null"] == full["null"][:5]  # floor(0.01 * 201) + 2 = 4 < 5 rows
    labels = [0] * 200 + [1] * 12
    assert flag_texts(null_toks + others, ids + [f"m{k}" for k in range(12)], labels, 0.5, 0.01, kept) == \
        flag_texts(null_toks + others, ids + [f"m{k}" for k in range(12)], labels, 0.5, 0.01, full)
    # a text less extreme than every kept row: the count is a lower bound, said so
    r = text_leak(others[1], 0.5, 0.01, kept)
    assert (r["null_as_extreme"], r["null_exact"], r["leaking"]) == (5, False, False)
    assert text_leak(others[1], 0.5, 0.01, full)["null_exact"] is True


def test_flag_texts_vectorized_equals_text_leak_text_by_text():
    """flag_texts (one vectorized tail, numpy comparisons) says what text_leak says for each text: ties,
    leave-one-out, texts without tokens above, NaNs, and a null truncated to fewer rows than texts above."""
    from memlens import leakage
    from memlens.leakage import flag_texts, tail_statistic, tail_statistics, text_leak, text_null

    rng = np.random.default_rng(3)
    toks = []
    for i in range(400):
        t = rng.normal(0, 1, rng.integers(5, 60))
        if i % 7 == 0:
            t[: rng.integers(1, 4)] = 3.5  # ties of (k, n) and of bits
        if i % 11 == 0:
            t[0] = np.nan
        toks.append(t)
    labels = [0] * 200 + [1] * 200
    ids = [f"t{i}" for i in range(400)]
    thr, rate = 2.0, 0.01
    k, n, s, b = tail_statistics(toks, thr, rate)
    for i in (0, 7, 11, 13, 399):
        assert (k[i], n[i], s[i], b[i]) == tail_statistic(toks[i], thr, rate)
    for keep in (1000, 5):  # 5: the kept rows truncated, counts past them "at least"
        old = leakage.MAX_NULL_ROWS
        leakage.MAX_NULL_ROWS = keep
        try:
            null = text_null(toks[:200], thr, rate, source="non-member texts", ids=ids[:200], text_rate=0.05)
        finally:
            leakage.MAX_NULL_ROWS = old
        want = [text_leak(t, thr, rate, null, i if y == 0 else None)["leaking"] for t, i, y in zip(toks, ids, labels)]
        assert flag_texts(toks, ids, labels, thr, rate, null) == want
        assert any(want) and not all(want)
