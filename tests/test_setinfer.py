"""Set-level inference: honest aggregation, one-sided test, false-positive control, power."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from memlens.setinfer import (
    SetInferenceError,
    false_positive_rate,
    pvalue_curve,
    set_inference,
    set_inference_audit,
    split_scores,
    synthetic_scores,
)

SHIFT = 0.358  # each single attack's AUC about Phi(0.358 / sqrt(2)) = 0.6


def test_split_pvalue_is_the_one_sided_welch_test_of_the_held_out_halves():
    s, u = synthetic_scores(40, 0.5, seed=1), synthetic_scores(30, seed=2)
    r = set_inference(s, u, test="welch")
    assert len(r.suspect_scores) == 20 and len(r.unseen_scores) == 15  # the halves the aggregator never saw
    ref = stats.ttest_ind(r.suspect_scores, r.unseen_scores, equal_var=False, alternative="greater")
    assert r.p_value == pytest.approx(ref.pvalue) and r.statistic == pytest.approx(ref.statistic)
    m = set_inference(s, u, test="mannwhitney")
    assert m.p_value == pytest.approx(stats.mannwhitneyu(m.suspect_scores, m.unseen_scores, alternative="greater").pvalue)
    # The held-out scores are the fitted aggregator's log-odds on the other half.
    hs, hu, w = split_scores(s.to_numpy(), u.to_numpy())
    np.testing.assert_allclose(hs, r.suspect_scores)
    np.testing.assert_allclose(hu, r.unseen_scores)
    assert w.shape == (1, 3) and list(r.weights.columns) == ["attack0", "attack1", "attack2"]
    big = set_inference(synthetic_scores(300, 0.5, seed=1), synthetic_scores(300, seed=2))
    assert (big.weights.to_numpy() > 0).all()  # every attack is shifted up in the suspect set


def test_one_sided_a_suspect_set_scoring_lower_is_not_detected():
    # Less member-like than the unseen texts is a shift, not membership: the non-negative
    # aggregator puts weight 0 on every attack and the test finds nothing; Maini et al.'s free
    # logistic flips the signs and "detects" it.
    lower, unseen = synthetic_scores(200, -0.5, seed=1), synthetic_scores(200, seed=2)
    r = set_inference(lower, unseen)
    assert r.p_value == 1.0 and not r.detected and (r.weights.to_numpy() == 0).all()
    free = set_inference(lower, unseen, nonnegative=False)
    assert free.p_value < 0.01 and (free.weights.to_numpy() < 0).all()


def test_nonnegative_logistic_matches_sklearn_when_the_bound_is_inactive_and_clips_otherwise():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from memlens.setinfer import NonNegativeLogistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1.0, 3.0, 0.5] + [0.0, 5.0, -2.0]
    y = (x @ np.array([1.0, 0.2, 0.4]) + rng.logistic(size=300) > 0).astype(int)
    ours = NonNegativeLogistic(C=0.5).fit(x, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)).fit(x, y)
    assert (ref[-1].coef_ > 0).all()
    np.testing.assert_allclose(ours.coef_, ref[-1].coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref[-1].intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.decision_function(x), ref.decision_function(x), atol=1e-3)
    # A feature that predicts non-membership gets weight exactly 0, the others stay positive.
    x[:, 1] = -x[:, 1] * 3
    y = (x[:, 0] - x[:, 1] + rng.logistic(size=300) > 0).astype(int)
    w = NonNegativeLogistic().fit(x, y).coef_[0]
    assert w[1] == 0 and w[0] > 0


@pytest.mark.parametrize("test", ["welch", "mannwhitney"])
def test_false_positive_rate_unseen_vs_unseen_20_splits(test):
    pool = synthetic_scores(400, seed=5)
    fpr, ps = false_positive_rate(pool, n_splits=20, size=100, alpha=0.05, test=test)
    assert ps.shape == (20,) and fpr == (ps < 0.05).mean()
    assert fpr <= 0.15  # 0.05 + binomial noise of 20 splits
    assert 0.2 < np.median(ps) < 0.8  # p-values spread over (0, 1) under the null, not piled at 1 either


@pytest.mark.slow  # 20 splits x 20 cross-fits x 2 folds
def test_false_positive_rate_crossfit_permutation():
    # With 19 shuffles the p-value lives on the grid 1/20, 2/20, ...; under the null each value
    # is equally likely, so P(p < 0.1) = P(p = 0.05) = 0.05 and the p-values average about 0.5.
    pool = synthetic_scores(200, seed=6)
    fpr, ps = false_positive_rate(pool, n_splits=20, size=20, alpha=0.1, method="crossfit", n_permutations=19)
    assert fpr <= 0.15 and (ps >= 1 / 20).all() and 0.3 < ps.mean() < 0.7


def test_detects_a_small_per_text_shift_that_single_texts_barely_show():
    suspect, unseen = synthetic_scores(500, SHIFT, seed=2), synthetic_scores(500, seed=3)
    y = np.r_[np.ones(500), np.zeros(500)]
    for a in suspect.columns:
        assert 0.54 < roc_auc_score(y, np.r_[suspect[a], unseen[a]]) < 0.66
    r = set_inference(suspect, unseen)
    assert r.p_value < 0.01 and r.detected and "trained on" in r.summary()


@pytest.mark.slow  # 150 cross-fits
def test_crossfit_permutation_detects_and_tests_every_text():
    suspect, unseen = synthetic_scores(300, SHIFT, seed=2), synthetic_scores(300, seed=3)
    c = set_inference(suspect, unseen, method="crossfit", n_permutations=149)
    assert c.p_value == 1 / 150  # no shuffle reaches the observed statistic
    assert c.detected and len(c.suspect_scores) == 300 and len(c.unseen_scores) == 300  # every text tested
    assert c.weights.shape == (2, 3) and any("permutation p-value" in n for n in c.notes)


def test_pvalue_curve_answers_how_many_texts_are_needed():
    suspect, unseen = synthetic_scores(600, SHIFT, seed=2), synthetic_scores(600, seed=3)
    # Welch, the test these bounds were set with (on normal scores Mann-Whitney has ~95% of its efficiency: 7 of 10 draws at 500)
    c = pvalue_curve(suspect, unseen, sizes=[20, 100, 500], draws=10, test="welch")
    assert c.table["size"].tolist() == [20, 100, 500]
    assert c.table["median_p"].iloc[0] > 0.05 and c.table["median_p"].iloc[-1] < 0.01
    assert c.n_needed in (100, 500) and c.table["detect_rate"].iloc[-1] >= 0.8
    assert c.to_dict()["n_needed"] == c.n_needed
    null = pvalue_curve(synthetic_scores(200, seed=4), synthetic_scores(200, seed=7), sizes=[50, 200], draws=10)
    assert null.n_needed is None
    with pytest.raises(SetInferenceError, match="outside 4..600"):
        pvalue_curve(suspect, unseen, sizes=[700])


def test_audit_score_tables_and_column_selection():
    s, u = synthetic_scores(30, 1.0, seed=1), synthetic_scores(30, seed=2)
    df = pd.concat([s.assign(label=1, tier=1), u.assign(label=0, tier=None)], ignore_index=True)
    df.insert(0, "id", [f"t{i}" for i in range(60)])
    r = set_inference_audit(SimpleNamespace(scores=df))
    assert r.attacks == ["attack0", "attack1", "attack2"] and r.n_suspect == 30 and r.n_unseen == 30
    one = set_inference_audit(SimpleNamespace(scores=df), ["attack1"])
    assert one.attacks == ["attack1"] and one.weights.shape == (1, 1)
    df.loc[3, "label"] = None
    with pytest.raises(SetInferenceError, match="needs a label"):
        set_inference_audit(SimpleNamespace(scores=df))


def test_bad_inputs_are_one_line_errors():
    s, u = synthetic_scores(10, seed=1), synthetic_scores(10, seed=2)
    with pytest.raises(SetInferenceError, match="unknown test"):
        set_inference(s, u, test="ks")
    with pytest.raises(SetInferenceError, match="unknown method"):
        set_inference(s, u, method="loo")
    with pytest.raises(SetInferenceError, match="at least 4 texts"):
        set_inference(s.iloc[:3], u)
    with pytest.raises(SetInferenceError, match="at least 6 texts"):
        set_inference(s.iloc[:5], u, method="crossfit", folds=3)
    with pytest.raises(SetInferenceError, match="no score column 'loss'"):
        set_inference(s, u, ["loss"])
    with pytest.raises(SetInferenceError, match="no score column 'attack2'"):
        set_inference(s, u.drop(columns="attack2"))
    bad = s.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(SetInferenceError, match="1 scores are NaN"):
        set_inference(bad, u)
    with pytest.raises(SetInferenceError, match="3 score columns but 2 attack names"):
        set_inference(s.to_numpy(), u.to_numpy(), ["a", "b"])
    with pytest.raises(SetInferenceError, match="need at least 40 unseen texts"):
        false_positive_rate(u, size=20)
    r = set_inference(s, u)
    assert any("only 10 texts" in n for n in r.notes)


def test_constant_scores_give_p_one_not_nan():
    s = pd.DataFrame({"a": np.ones(10)})
    r = set_inference(s, s.copy())
    assert r.p_value == 1.0


def test_default_test_is_mann_whitney_and_small_sets_say_its_floor():
    s, u = synthetic_scores(40, 1.0, seed=1), synthetic_scores(40, seed=2)
    d = set_inference(s, u)
    assert d.test == "mannwhitney" and d.p_value == set_inference(s, u, test="mannwhitney").p_value
    # 8 + 8 texts: 4 + 4 are tested, so the exact one-sided rank p-value is at least 1/C(8, 4) = 1/70 > 0.01.
    small = set_inference(s.iloc[:8], u.iloc[:8])
    assert small.p_value >= 1 / 70 and any("smallest possible Mann-Whitney p-value is 0.0143" in n for n in small.notes)
    assert not any("Mann-Whitney" in n for n in set_inference(s.iloc[:8], u.iloc[:8], test="welch").notes)
    assert not any("smallest possible" in n for n in set_inference(s.iloc[:10], u.iloc[:10]).notes)  # 5 + 5: 1/252


def test_mann_whitney_keeps_its_power_on_heavy_tailed_scores():
    # Scores through an increasing, heavy-tailed map (a few texts far below the rest, as badly predicted
    # texts' losses are): over 40 draws of 150 + 150 texts the default (Mann-Whitney) detects the shift
    # more often than Welch (measured: 33 vs 27 of 40 at alpha 0.05; benchmarks/setinfer_fpr.py --skew has the curves).
    assert stats.skew(-np.exp(-synthetic_scores(5000, seed=1)["attack0"])) < -3
    hits = {"mannwhitney": 0, "welch": 0}
    for d in range(40):
        s, u = -np.exp(-synthetic_scores(150, SHIFT, seed=100 + d)), -np.exp(-synthetic_scores(150, seed=200 + d))
        for test in hits:
            hits[test] += set_inference(s, u, test=test, seed=d).p_value < 0.05
    assert hits["mannwhitney"] > hits["welch"]


def test_fits_run_on_one_blas_thread_and_the_limit_is_lifted_after(monkeypatch):
    # Tiny fits: extra BLAS threads only slow them (10x on a loaded 2-core box); the caller's setting comes back.
    from threadpoolctl import threadpool_info

    import memlens.setinfer as si

    before = [i["num_threads"] for i in threadpool_info()]
    seen, split = [], si.split_scores

    def spy(*args, **kwargs):
        seen.append(max(i["num_threads"] for i in threadpool_info()))
        return split(*args, **kwargs)

    monkeypatch.setattr(si, "split_scores", spy)
    pvalue_curve(synthetic_scores(20, seed=1), synthetic_scores(20, seed=2), sizes=[10], draws=2)
    set_inference(synthetic_scores(20, seed=1), synthetic_scores(20, seed=2))
    assert seen == [1, 1, 1] and [i["num_threads"] for i in threadpool_info()] == before
