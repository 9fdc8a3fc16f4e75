"""Defaults that fit language models: a = 1, the reference-drops-out warning, bottomk, logmean averaging."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from memlens.attacks import AttackInput, ReferenceView, TokenComparison, get_attack
from tests.attacks.test_attacks import KL, LOG_RATIO, P_R1_LP, P_R2_LP, P_T_LP, R1_LP, R2_LP, T_LP, make_input, mean, ts


def test_default_a_is_one():
    for name in ("rmia", "informia"):
        assert get_attack(name).params["a"].default == 1.0
        assert get_attack(name).resolve_params({})["average"] == "mixture"


def random_input(seed: int, n: int = 60, m: int = 25) -> AttackInput:
    rng = np.random.default_rng(seed)

    def many(k, shift):
        return [ts(rng.normal(-3.0 + shift, 1.5, rng.integers(1, 30))) for _ in range(k)]

    return AttackInput(texts=[f"x{i}" for i in range(n)], target=many(n, 0.3), references=[ReferenceView("r", many(n, 0.0))],
                       population_texts=[f"z{j}" for j in range(m)], population_target=many(m, 0.3),
                       population_references=[ReferenceView("r", many(m, 0.0))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_reference_a1_informia_is_affine_in_ref(seed):
    inp = random_input(seed)
    info = get_attack("informia")(inp)  # defaults: a = 1, geometric
    ref = get_attack("ref")(inp)
    assert spearmanr(info.scores, ref.scores).statistic == pytest.approx(1.0)
    # By hand: log2(Pr(x|θ)/Pr_ref(x)) = (mean log p_θ - mean log p_ref) / ln 2 = ref / ln 2, minus the
    # population's mean of the same quantity.
    offset = mean([(mean(t.logprob.tolist()) - mean(r.logprob.tolist())) / math.log(2)
                   for t, r in zip(inp.population_target, inp.population_references[0].stats)])
    want = [s / math.log(2) - offset for s in ref.scores.tolist()]
    assert info.scores.tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert "warning" not in info.info and info.info["reference_weight_median"] == 1.0


def test_prob_sum_with_a_below_one_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="memlens.attacks.rmia"):
        res = get_attack("informia")(make_input(), prob="sum", a=0.3)
    assert "reference drops out" in res.info["warning"]
    assert any("reference drops out" in r.getMessage() for r in caplog.records)
    assert "reference drops out" in get_attack("rmia")(make_input(), prob="sum", a=0.99).info["warning"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memlens.attacks.rmia"):
        assert "warning" not in get_attack("informia")(make_input(), prob="sum").info  # a = 1
    assert not caplog.records


def test_prob_sum_with_a_below_one_equals_total_log_likelihood():
    """What the warning says: with a < 1 and long texts the ranking is the target's total log-likelihood."""
    inp = random_input(4)
    for t in inp.target + inp.references[0].stats:  # long texts: Pr(x) ~ e^-300
        t.logprob = np.tile(t.logprob, 10)
    res = get_attack("informia")(inp, prob="sum", a=0.3)
    total = [float(np.sum(t.logprob, dtype=np.float64)) for t in inp.target]
    assert spearmanr(res.scores, total).statistic == pytest.approx(1.0)


def test_small_a_on_lm_probabilities_warns_geometric_too():
    inp = random_input(5)  # token log-probabilities around -3: Pr(x) ~ 0.05
    res = get_attack("informia")(inp, a=0.3)
    # weight = 1.3 p / (1.3 p + 0.7) ~ 0.09 at p = 0.05
    assert res.info["reference_weight_median"] < 0.2
    assert "close to the loss attack" in res.info["warning"]


def test_bottomk_by_hand():
    comp = TokenComparison(LOG_RATIO, KL)
    res = get_attack("informia_token")(make_input(comparison=comp), agg="bottomk", k=0.4)
    ln2 = math.log(2)
    # text 0: s = [0.6, -0.8, 2.0, 0.4, 1.8] / ln2; floor(0.4 * 5) = 2 lowest: -0.8 and 0.4.
    assert res.scores[0] == pytest.approx((-0.8 + 0.4) / 2 / ln2)
    # text 1: s = [0.8, 0.6, 0.55, 3.0] / ln2; floor(1.6) = 1 lowest: 0.55.
    assert res.scores[1] == pytest.approx(0.55 / ln2)
    # text 2: one token; floor(0.4) = 0 -> at least one token.
    assert res.scores[2] == pytest.approx(1.7 / ln2)
    # the author's name is an alias; topk takes the other end.
    assert get_attack("informia_token")(make_input(comparison=comp), agg="mink", k=0.4).scores.tolist() == res.scores.tolist()
    top = get_attack("informia_token")(make_input(comparison=comp), agg="topk", k=0.4)
    assert top.scores[0] == pytest.approx((2.0 + 1.8) / 2 / ln2)


def test_logmean_average_by_hand():
    """average=logmean: log Pr(x) = mean over references of log Pr(x|ref) (the InfoRMIA author's code)."""
    res = get_attack("informia")(make_input(), average="logmean")
    ln2 = math.log(2)

    def bits(t, r1, r2):
        return (mean(t) - (mean(r1) + mean(r2)) / 2) / ln2

    offset = mean([bits(*v) for v in zip(P_T_LP, P_R1_LP, P_R2_LP)])
    assert res.scores.tolist() == pytest.approx([bits(*v) - offset for v in zip(T_LP, R1_LP, R2_LP)])
    # text 2: (-2.5 - (-1 - 4)/2) / ln2 = 0 bits before centring; the mixture gives log2(e^-2.5 / mean(e^-1, e^-4)).
    assert res.scores[2] + offset == pytest.approx(0.0, abs=1e-6)  # logprob is stored as float32
    mix = get_attack("informia")(make_input())
    assert mix.scores[2] + mix.info["population_offset_bits"] == pytest.approx(
        math.log2(math.exp(-2.5) / ((math.exp(-1.0) + math.exp(-4.0)) / 2)))
    # rmia accepts the same option
    assert get_attack("rmia")(make_input(), average="logmean").info["average"] == "logmean"
