"""RMIA/InfoRMIA with reference models of known splits (online, offline per-text OUT, tuned a), by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from memlens.attacks import AttackError, AttackInput, ReferenceView, get_attack
from memlens.attacks._offline_a import A_GRID, TuneCase, offline_log_marginal, tune_offline_a
from memlens.attacks.rmia import rmia_counts
from tests.attacks.test_attacks import ts

# One token per text, so Pr(x|model) = exp(logprob) under both prob modes.
T = [-1.0, -2.0]  # target: x0, x1
P_T = [-1.5, -1.2]  # target: z0, z1
REF_A = ([-1.1, -2.5], [-1.4, -1.0])  # (audited, population); trained on x0
REF_B = ([-1.8, -2.1], [-1.6, -1.5])  # trained on x1
SPLITS = np.array([[True, False], [False, True]])


def tiny(splits=SPLITS, pop_splits=None) -> AttackInput:
    return AttackInput(
        texts=["x0", "x1"], target=[ts([v]) for v in T],
        references=[ReferenceView(n, [ts([v]) for v in r[0]]) for n, r in (("A", REF_A), ("B", REF_B))],
        population_texts=["z0", "z1"], population_target=[ts([v]) for v in P_T],
        population_references=[ReferenceView(n, [ts([v]) for v in r[1]]) for n, r in (("A", REF_A), ("B", REF_B))],
        reference_membership=splits, population_reference_membership=pop_splits,
    )


def rmia_by_hand(rx, rz, gamma=1.0):
    return [sum(1 for b in rz if a / b >= gamma) / len(rz) for a in rx]


def test_online_rmia_by_hand():
    e = math.exp
    # Online: Pr(x) = mean of the IN and the OUT reference's probability.
    rx = [e(T[i]) / (0.5 * (e(REF_A[0][i]) + e(REF_B[0][i]))) for i in range(2)]
    rz = [e(P_T[j]) / (0.5 * (e(REF_A[1][j]) + e(REF_B[1][j]))) for j in range(2)]
    # x0: 0.3679 / 0.2491 = 1.477; x1: 0.1353 / 0.1023 = 1.323; z0: 0.2231 / 0.2242 = 0.995; z1: 0.3012 / 0.2955 = 1.019
    assert rx[0] > rx[1] > rz[1] > rz[0]
    res = get_attack("rmia")(tiny())
    assert res.info["mode"] == "online" and "note" not in res.info
    assert res.scores.tolist() == pytest.approx(rmia_by_hand(rx, rz)) == [1.0, 1.0]
    assert "not used online" in get_attack("rmia")(tiny(), a=0.3).info["note"]
    # gamma = 1.3: x0 beats both z (1.477/0.995 = 1.484, 1.477/1.019 = 1.449), x1 only z0 (1.323/0.995 = 1.330;
    # 1.323/1.019 = 1.298 < 1.3).
    res = get_attack("rmia")(tiny(), gamma=1.3)
    assert res.scores.tolist() == pytest.approx(rmia_by_hand(rx, rz, 1.3)) == [1.0, 0.5]
    info = get_attack("informia")(tiny())
    offset = (math.log2(rz[0]) + math.log2(rz[1])) / 2
    assert info.scores.tolist() == pytest.approx([math.log2(v) - offset for v in rx])


def test_offline_with_splits_uses_each_texts_out_references():
    e, a = math.exp, 0.5
    # x0 is OUT only for B, x1 only for A; the population is OUT for both (no population splits given).
    out_x = [e(REF_B[0][0]), e(REF_A[0][1])]
    rx = [e(T[i]) / (0.5 * ((1 + a) * out_x[i] + 1 - a)) for i in range(2)]
    rz = [e(P_T[j]) / (0.5 * ((1 + a) * 0.5 * (e(REF_A[1][j]) + e(REF_B[1][j])) + 1 - a)) for j in range(2)]
    res = get_attack("informia")(tiny(), mode="offline", a=a)
    offset = (math.log2(rz[0]) + math.log2(rz[1])) / 2
    assert res.info["mode"] == "offline" and res.info["a"] == a
    assert res.scores.tolist() == pytest.approx([math.log2(v) - offset for v in rx])
    assert get_attack("rmia")(tiny(), mode="offline", a=a).scores.tolist() == pytest.approx(rmia_by_hand(rx, rz))


def test_population_splits_are_used():
    e = math.exp
    pop = np.array([[False, True], [False, False]])  # A trained on z1: z1's OUT marginal is B alone
    rz = [e(P_T[0]) / (0.5 * (e(REF_A[1][0]) + e(REF_B[1][0]))), e(P_T[1]) / e(REF_B[1][1])]
    res = get_attack("informia")(tiny(pop_splits=pop), mode="offline")
    assert res.info["population_offset_bits"] == pytest.approx((math.log2(rz[0]) + math.log2(rz[1])) / 2)


def test_text_without_out_reference_falls_back_to_online_mean():
    splits = np.array([[True, False], [True, False]])  # x0 is IN for both references
    res = get_attack("informia")(tiny(splits), mode="offline", a=0.5)
    e = math.exp
    want_x0 = math.log2(e(T[0]) / (0.5 * (e(REF_A[0][0]) + e(REF_B[0][0]))))
    assert res.scores[0] + res.info["population_offset_bits"] == pytest.approx(want_x0)
    assert "1 audited text(s) had no OUT reference" in res.info["note"]


def test_mode_errors_and_membership_validation():
    inp = tiny(splits=None)
    assert get_attack("rmia")(inp).info["mode"] == "offline"  # auto without splits
    with pytest.raises(AttackError, match="known splits"):
        get_attack("rmia")(inp, mode="online")
    with pytest.raises(AttackError, match="at least two reference models"):
        get_attack("informia")(inp, tune_a=True)
    with pytest.raises(AttackError, match="mode=offline"):
        get_attack("informia")(tiny(), tune_a=True, mode="online")
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        tiny(splits=np.ones((1, 2), dtype=bool))
    with pytest.raises(ValueError, match="booleans"):
        tiny(splits=np.full((2, 2), 2))


# ---------------------------------------------------------------------------------------------
# Grid search for the offline a (Privacy Meter's tune_offline_a)
# ---------------------------------------------------------------------------------------------


def synthetic_case(a0: float, n: int = 400, seed: int = 0) -> TuneCase:
    """A pseudo-target whose log-probabilities are log Pr_a0(x) + 0.02 * member + small noise, with
    Pr_a0 the offline marginal at a0: only a = a0 cancels the term that varies with Pr_OUT(x)."""
    rng = np.random.default_rng(seed)
    out_lp = np.log(rng.uniform(0.01, 0.9, n))
    labels = rng.random(n) < 0.5
    target = offline_log_marginal(out_lp, a0) + 0.02 * labels + rng.normal(0, 0.003, n)
    pop_out = np.log(rng.uniform(0.01, 0.9, 200))
    pop_target = offline_log_marginal(pop_out, a0) + rng.normal(0, 0.003, 200)
    return TuneCase(target, labels, out_lp, pop_target, pop_out)


@pytest.mark.parametrize("a0", [0.0, 0.4, 0.7, 1.0])
def test_tune_offline_a_recovers_known_a(a0):
    a, aucs = tune_offline_a([synthetic_case(a0)])
    assert a == a0
    assert aucs.shape == A_GRID.shape and aucs.max() > 0.95
    # RMIA's pairwise count is monotone in log LR(x): the same a wins, and averaging two cases keeps it.
    a_rmia, _ = tune_offline_a([synthetic_case(a0), synthetic_case(a0, seed=1)], score=lambda x, z: rmia_counts(x, z))
    assert a_rmia == a0


def test_tune_offline_a_needs_both_classes():
    c = synthetic_case(0.4)
    c.labels = np.ones_like(c.labels)
    with pytest.raises(AttackError, match="some but not all"):
        tune_offline_a([c])


def test_tuned_attack_reports_a_and_equals_the_offline_attack_at_that_a():
    rng = np.random.default_rng(3)
    n, m, r = 40, 30, 4
    splits = rng.random((r, n)) < 0.5
    pop_splits = rng.random((r, m)) < 0.5
    base, pbase = rng.normal(-2.0, 0.5, n), rng.normal(-2.0, 0.5, m)

    def stats(mean, bump=0.0):
        return [ts((mean[i] + bump[i] if np.ndim(bump) else mean[i]) + rng.normal(0, 0.1, 6)) for i in range(len(mean))]

    inp = AttackInput(
        texts=[f"x{i}" for i in range(n)], target=stats(base, 0.3 * (rng.random(n) < 0.5)),
        references=[ReferenceView(f"r{k}", stats(base, 0.3 * splits[k])) for k in range(r)],
        population_texts=[f"z{j}" for j in range(m)], population_target=stats(pbase),
        population_references=[ReferenceView(f"r{k}", stats(pbase, 0.3 * pop_splits[k])) for k in range(r)],
        reference_membership=splits, population_reference_membership=pop_splits,
    )
    for name in ("rmia", "informia"):
        res = get_attack(name)(inp, tune_a=True)
        a = res.info["tuned_a"]
        assert a in A_GRID and res.info["mode"] == "offline" and res.info["a"] == a
        assert set(res.info["tune_auc"]) == {f"{g:.1f}" for g in A_GRID}
        again = get_attack(name)(inp, mode="offline", a=a)
        np.testing.assert_allclose(res.scores, again.scores)


def test_ref_uses_out_references_with_splits():
    # x0 is OUT only for B, x1 only for A (one token each: mean NLL = -logprob).
    res = get_attack("ref")(tiny())
    assert res.scores.tolist() == pytest.approx([T[0] - REF_B[0][0], T[1] - REF_A[0][1]])
    assert get_attack("ref")(tiny(splits=None)).scores.tolist() == pytest.approx(
        [T[i] - (REF_A[0][i] + REF_B[0][i]) / 2 for i in range(2)])
    both_in = get_attack("ref")(tiny(splits=np.array([[True, False], [True, False]])))
    assert both_in.scores[0] == pytest.approx(T[0] - (REF_A[0][0] + REF_B[0][0]) / 2)
    assert "1 text(s) had no OUT reference" in both_in.info["note"]
