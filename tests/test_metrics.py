"""AUC, TPR@FPR (with refusal below the resolvable FPR), validation and bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest

from memlens.metrics import MetricsError, evaluate, fpr_label, roc, tpr_at_fpr


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
    assert m.auc_ci == pytest.approx((1.0, 1.0))


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
