"""AUC, TPR@FPR (with refusal below the resolvable FPR), validation and bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest

from memlens.metrics import (
    CI_AUC_SCORE,
    CI_BOOTSTRAP,
    CI_CLOPPER_PEARSON,
    MetricsError,
    auc_score_interval,
    bootstrap_arrays,
    clopper_pearson,
    evaluate,
    evaluate_many,
    fpr_label,
    roc,
    tpr_at_fpr,
)

from .metrics_reference import sklearn_point, sklearn_resamples


def test_auc_by_hand():
    # pairs (member, non-member): 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1 -> 3/4
    m = evaluate([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], n_bootstrap=0)
    assert m.auc == pytest.approx(0.75)
    assert (m.n_members, m.n_nonmembers) == (2, 2)
    assert m.auc_ci is None


def test_auc_ties_count_half():
    assert evaluate([1, 0], [0.5, 0.5], n_bootstrap=0).auc == pytest.approx(0.5)
    # 1>0.5, 1>0, 0.5=0.5 (1/2), 0.5>0 -> 3.5 / 4
    assert evaluate([1, 1, 0, 0], [1.0, 0.5, 0.5, 0.0], n_bootstrap=0).auc == pytest.approx(0.875)


def test_auc_orientation_and_bool_labels():
    assert evaluate(np.array([True, False, True, False]), [3, 1, 4, 2], n_bootstrap=0).auc == 1.0
    assert evaluate([1, 0, 1, 0], [1, 3, 2, 4], n_bootstrap=0).auc == 0.0


# Ten non-members scored 0..9; four members. A member tied with non-member 7 gives a diagonal ROC
# segment from (0.2, 0.25) to (0.3, 0.5).
NEG = list(range(10))
POS = [9.5, 7.0, 3.5, -1.0]
LABELS = [1] * 4 + [0] * 10
SCORES = POS + NEG


@pytest.mark.parametrize("fpr,want", [
    (0.1, 0.25),   # threshold 9: one member (9.5) above, one non-member (9)
    (0.2, 0.25),
    (0.25, 0.375),  # halfway along the tied diagonal
    (0.3, 0.5),
    (0.5, 0.5),    # threshold 5: non-members 5..9
    (0.6, 0.75),   # threshold 3.5: non-members 4..9 and member 3.5 above (a vertical step: best TPR)
    (0.65, 0.75),
    (1.0, 1.0),
])
def test_tpr_at_fpr_by_hand(fpr, want):
    assert tpr_at_fpr(LABELS, SCORES, fpr) == pytest.approx(want)


def test_tpr_at_fpr_takes_best_tpr_at_a_vertical_step():
    # non-members 0..9, members 9.5 and 8.5: at FPR exactly 0.1 both members are caught.
    labels = [1, 1] + [0] * 10
    scores = [9.5, 8.5] + list(range(10))
    assert tpr_at_fpr(labels, scores, 0.1) == pytest.approx(1.0)
    assert tpr_at_fpr(labels, scores, 0.15) == pytest.approx(1.0)


def test_tpr_refused_below_one_over_n_nonmembers():
    assert tpr_at_fpr(LABELS, SCORES, 0.05) is None  # 10 non-members resolve 10% at best
    assert tpr_at_fpr(LABELS, SCORES, 0.1) is not None
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30, int), np.zeros(100, int)]
    scores = rng.normal(size=130) + labels
    m = evaluate(labels, scores, fprs=(0.001, 0.01, 0.05), n_bootstrap=50)
    assert m.tpr["0.1%"] is None and m.tpr_ci["0.1%"] is None
    assert m.tpr["1%"] is not None and m.tpr["5%"] is not None
    assert len(m.notes) == 1 and "0.1%" in m.notes[0] and "100 non-members" in m.notes[0]
    d = m.to_dict()
    assert d["tpr_at_fpr"]["0.1%"] is None and d["n_nonmembers"] == 100


def test_tpr_at_exactly_one_over_n_is_supported():
    labels = np.r_[np.ones(5, int), np.zeros(1000, int)]
    scores = np.r_[np.full(5, 2000.0), np.arange(1000.0)]
    assert tpr_at_fpr(labels, scores, 0.001) == pytest.approx(1.0)


def test_perfect_separation():
    labels = np.r_[np.ones(50, int), np.zeros(200, int)]
    scores = np.r_[np.linspace(10, 11, 50), np.linspace(0, 1, 200)]
    m = evaluate(labels, scores, fprs=(0.01, 0.05), n_bootstrap=100)
    assert m.auc == 1.0
    assert m.tpr == {"1%": 1.0, "5%": 1.0}
    # every resample separates perfectly too: the bootstrap collapses to [1, 1] and is replaced
    lo, hi = m.auc_ci
    assert 0.9 < lo < 1.0 and hi == 1.0
    assert m.ci_method["auc"] == CI_AUC_SCORE
    for k in ("1%", "5%"):
        assert m.tpr_ci[k][0] < 1.0 and m.tpr_ci[k][1] == 1.0
        assert m.ci_method["tpr_at_fpr"][k] == CI_CLOPPER_PEARSON
    assert m.to_dict()["ci_method"] == m.ci_method


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], [1, 2, 0], []])
def test_single_class_or_bad_labels_raise(labels):
    with pytest.raises(MetricsError, match="both members"):
        evaluate(labels, np.zeros(len(labels)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_scores_raise(bad):
    with pytest.raises(MetricsError, match="NaN or infinite"):
        evaluate([1, 0, 1], [0.3, bad, 0.2])
    with pytest.raises(MetricsError):
        tpr_at_fpr([1, 0, 1], [0.3, bad, 0.2], 0.5)


def test_shape_mismatch_raises():
    with pytest.raises(MetricsError, match="shape"):
        evaluate([1, 0], [0.1, 0.2, 0.3])


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(80, int), np.zeros(120, int)]
    scores = rng.normal(size=200) + 0.8 * labels
    a = evaluate(labels, scores, fprs=(0.01, 0.05), n_bootstrap=300, seed=7)
    b = evaluate(labels, scores, fprs=(0.01, 0.05), n_bootstrap=300, seed=7)
    c = evaluate(labels, scores, fprs=(0.01, 0.05), n_bootstrap=300, seed=8)
    assert a.auc_ci[0] <= a.auc <= a.auc_ci[1]
    assert a.auc_ci[1] - a.auc_ci[0] > 0.02
    for k in ("1%", "5%"):
        lo, hi = a.tpr_ci[k]
        assert lo <= a.tpr[k] <= hi
    assert a.auc_ci == b.auc_ci and a.tpr_ci == b.tpr_ci
    assert a.auc_ci != c.auc_ci
    assert a.auc == c.auc  # the point estimate does not depend on the seed


def test_bootstrap_ci_width_follows_level():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(60, int), np.zeros(60, int)]
    scores = rng.normal(size=120) + labels
    wide = evaluate(labels, scores, n_bootstrap=300, ci=0.99, fprs=(0.05,))
    narrow = evaluate(labels, scores, n_bootstrap=300, ci=0.5, fprs=(0.05,))
    assert wide.auc_ci[0] <= narrow.auc_ci[0] <= narrow.auc_ci[1] <= wide.auc_ci[1]


def test_roc_curve():
    f, t = roc(LABELS, SCORES)
    assert f[0] == 0 and t[-1] == 1 and f[-1] == 1
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)


def test_fpr_label():
    assert [fpr_label(f) for f in (0.001, 0.01, 0.05, 0.1)] == ["0.1%", "1%", "5%", "10%"]


def _tied_data(seed, m, n, levels):
    """Scores on a coarse grid (many ties within and across classes), members shifted up."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.ones(m, int), np.zeros(n, int)])
    scores = np.round(rng.normal(size=m + n) + 0.7 * labels, levels)
    return labels, scores


@pytest.mark.parametrize("seed,m,n,levels", [(0, 40, 60, 1), (1, 300, 1000, 0), (2, 7, 2000, 2), (3, 500, 500, 3)])
def test_point_estimates_equal_scikit_learn_with_ties(seed, m, n, levels):
    labels, scores = _tied_data(seed, m, n, levels)
    fprs = (0.0005, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0)
    auc, tpr = sklearn_point(labels, scores, fprs)
    got = evaluate(labels, scores, fprs=fprs, n_bootstrap=0)
    assert got.auc == pytest.approx(auc, abs=1e-12)
    for f, want in zip(fprs, tpr):
        have = got.tpr[fpr_label(f)]
        assert (have is None) == (want is None)
        if want is not None:
            assert have == pytest.approx(want, abs=1e-12)
            assert tpr_at_fpr(labels, scores, f) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed,levels", [(4, 0), (5, 1), (6, 6)])
def test_every_bootstrap_resample_equals_scikit_learn(seed, levels):
    # the same draws through the vectorized path and through one scikit-learn call per resample
    labels, scores = _tied_data(seed, 60, 150, levels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    rng = np.random.default_rng(seed)
    pd_, nd_ = rng.integers(0, len(pos), (40, len(pos))), rng.integers(0, len(neg), (40, len(neg)))
    fprs = (0.01, 0.05, 0.25)
    aucs, tprs = bootstrap_arrays(pos, neg, pd_, nd_, fprs)
    want_auc, want_tpr = sklearn_resamples(pos, neg, pd_, nd_, fprs)
    np.testing.assert_allclose(aucs, want_auc, atol=1e-12)
    np.testing.assert_allclose(tprs, want_tpr, atol=1e-12)


@pytest.mark.parametrize("levels", [None, 1])
def test_resamples_of_distinct_and_of_tied_scores_equal_scikit_learn(levels):
    """Without ties the counts per value are a scatter of per-text weights, with ties a bincount of the draws:
    both give what scikit-learn gives on the very same resamples."""
    from memlens.metrics import _Ranked

    rng = np.random.default_rng(11)
    labels = rng.permutation(np.r_[np.ones(80, int), np.zeros(120, int)])
    scores = rng.normal(size=200) + 0.5 * labels
    scores = scores if levels is None else np.round(scores, levels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    assert _Ranked(pos, neg).distinct == (levels is None)
    pd_, nd_ = rng.integers(0, len(pos), (30, len(pos))), rng.integers(0, len(neg), (30, len(neg)))
    aucs, tprs = bootstrap_arrays(pos, neg, pd_, nd_, (0.01, 0.1))
    want_auc, want_tpr = sklearn_resamples(pos, neg, pd_, nd_, (0.01, 0.1))
    np.testing.assert_allclose(aucs, want_auc, atol=1e-12)
    np.testing.assert_allclose(tprs, want_tpr, atol=1e-12)


def test_many_columns_at_once_give_each_column_what_it_gets_alone():
    """evaluate_many draws the resamples once for every column (the audit's attacks), with or without a
    thread pool: each column's metrics are exactly those of evaluate on it alone."""
    from concurrent.futures import ThreadPoolExecutor

    labels, tied = _tied_data(8, 70, 90, 1)
    rng = np.random.default_rng(8)
    cols = {"tied": tied, "distinct": rng.normal(size=160) + labels, "perfect": labels + 0.01 * rng.random(160)}
    alone = {k: evaluate(labels, v, n_bootstrap=200, seed=5, chunk=16) for k, v in cols.items()}
    assert evaluate_many(labels, cols, n_bootstrap=200, seed=5, chunk=16) == alone
    with ThreadPoolExecutor(3) as pool:
        assert evaluate_many(labels, cols, n_bootstrap=200, seed=5, chunk=16, pool=pool) == alone
    assert evaluate_many(labels, {}) == {}


def test_bootstrap_does_not_depend_on_the_chunk_size():
    labels, scores = _tied_data(7, 50, 80, 1)
    a = evaluate(labels, scores, fprs=(0.05,), n_bootstrap=100, seed=3, chunk=7)
    b = evaluate(labels, scores, fprs=(0.05,), n_bootstrap=100, seed=3, chunk=64)
    assert a.auc_ci == b.auc_ci and a.tpr_ci == b.tpr_ci
    assert a.ci_method == {"auc": CI_BOOTSTRAP, "tpr_at_fpr": {"5%": CI_BOOTSTRAP}}


def test_auc_of_one_from_48_members_has_a_lower_bound_below_one():
    labels = np.r_[np.ones(48, int), np.zeros(48, int)]
    scores = np.r_[np.arange(48) + 100.0, np.arange(48.0)]
    m = evaluate(labels, scores, fprs=(0.05,), n_bootstrap=200)
    assert m.auc == 1.0 and m.ci_method["auc"] == CI_AUC_SCORE
    assert m.auc_ci[0] < 1.0 and m.auc_ci[1] == 1.0
    assert m.auc_ci == auc_score_interval(1.0, 48, 48)


def test_auc_score_interval_by_hand():
    # at AUC = 1: (1 - t)^2 = z^2 V(t), V(t) = t(1-t)(1 + (m-1)(1-t)/(2-t) + (n-1)t/(1+t))/(mn)
    lo, hi = auc_score_interval(1.0, 10, 20)
    z2 = 1.959963984540054 ** 2
    t = lo
    assert (1 - t) ** 2 == pytest.approx(z2 * t * (1 - t) * (1 + 9 * (1 - t) / (2 - t) + 19 * t / (1 + t)) / 200)
    assert hi == 1.0 and 0.5 < lo < 1.0
    # inside (0, 1) it brackets the estimate; more data, narrower
    a, b = auc_score_interval(0.8, 50, 50), auc_score_interval(0.8, 500, 500)
    assert a[0] < b[0] < 0.8 < b[1] < a[1]
    lo0, hi0 = auc_score_interval(0.0, 10, 20)
    assert lo0 == 0.0 and 0 < hi0 < 0.5


def test_clopper_pearson_matches_scipy_binomtest():
    from scipy.stats import binomtest

    for k, n in [(0, 20), (3, 20), (20, 20), (17, 48)]:
        want = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert clopper_pearson(k, n) == pytest.approx((want.low, want.high))


def test_intervals_cover_the_point_estimate():
    for seed in range(5):
        labels, scores = _tied_data(seed + 10, 30 + 20 * seed, 200, 1)
        m = evaluate(labels, scores, fprs=(0.01, 0.05, 0.2), n_bootstrap=200, seed=seed)
        assert m.auc_ci[0] <= m.auc <= m.auc_ci[1]
        for k, v in m.tpr.items():
            assert m.tpr_ci[k][0] - 1e-12 <= v <= m.tpr_ci[k][1] + 1e-12


def test_rank_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    from memlens.metrics import auc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = rng.integers(0, 20, 500).astype(float)  # many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
