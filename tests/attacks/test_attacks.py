"""Every attack against a hand computation on small, hand-built statistics."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from memlens.attacks import (
    REGISTRY,
    AttackError,
    AttackInput,
    ReferenceView,
    TokenComparison,
    get_attack,
    resolve_attack_names,
)
from memlens.attacks.base import lowest_k_mean
from memlens.stats import TokenStats


def ts(logprob, mean_logp=None, std_logp=None) -> TokenStats:
    """TokenStats with chosen log-probabilities (and mu, sigma for Min-K%++)."""
    n = len(logprob)
    mean_logp = mean_logp if mean_logp is not None else [-2.0] * n
    std_logp = std_logp if std_logp is not None else [1.0] * n
    return TokenStats(
        token_ids=list(range(n)), logprob=logprob, entropy=[-m for m in mean_logp], mean_logp=mean_logp,
        std_logp=std_logp, rank=[1] * n, span_start=list(range(n)), span_end=list(range(1, n + 1)),
    )


TEXTS = ["alpha beta gamma", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "x"]
T_LP = [[-1.0, -2.0, -3.0, -0.5, -4.0], [-0.1, -0.2, -6.0, -0.3], [-2.5]]
R1_LP = [[-1.5, -2.5, -2.0, -1.0, -3.0], [-1.0, -1.0, -1.0, -1.0], [-1.0]]
R2_LP = [[-0.5, -1.0, -4.0, -2.0, -2.0], [-2.0, -0.5, -0.5, -3.0], [-4.0]]
P_T_LP = [[-1.0, -1.0], [-3.0, -2.0, -2.5], [-0.2, -0.4, -0.6], [-5.0]]  # population under the target
P_R1_LP = [[-2.0, -1.0], [-2.0, -2.0, -2.0], [-1.0, -1.0, -1.0], [-4.0]]
P_R2_LP = [[-1.0, -1.5], [-2.5, -2.5, -1.0], [-0.5, -0.3, -2.0], [-3.0]]


def mean(xs):
    return sum(xs) / len(xs)


def make_input(refs=("r1", "r2"), population=True, comparison=None) -> AttackInput:
    ref_lps = {"r1": (R1_LP, P_R1_LP), "r2": (R2_LP, P_R2_LP)}
    return AttackInput(
        texts=list(TEXTS),
        target=[ts(x) for x in T_LP],
        references=[ReferenceView(r, [ts(x) for x in ref_lps[r][0]]) for r in refs],
        comparison=comparison,
        population_texts=[f"p{i}" for i in range(len(P_T_LP))] if population else [],
        population_target=[ts(x) for x in P_T_LP] if population else [],
        population_references=[ReferenceView(r, [ts(x) for x in ref_lps[r][1]]) for r in refs] if population else [],
    )


def test_loss():
    res = get_attack("loss")(make_input())
    assert res.scores.tolist() == pytest.approx([mean(x) for x in T_LP])


def test_zlib():
    res = get_attack("zlib")(make_input())
    want = [mean(lp) / len(zlib.compress(t.encode("utf-8"))) for lp, t in zip(T_LP, TEXTS)]
    assert res.scores.tolist() == pytest.approx(want)
    # A repetitive text compresses well: its divisor is smaller than its length.
    assert len(zlib.compress(TEXTS[1].encode())) < len(TEXTS[1])


@pytest.mark.parametrize("k", [0.2, 0.4, 0.5, 1.0, 0.01])
def test_mink(k):
    res = get_attack("mink")(make_input(), k=k)
    want = []
    for lp in T_LP:
        n = max(1, math.floor(k * len(lp)))
        want.append(mean(sorted(lp)[:n]))
    assert res.scores.tolist() == pytest.approx(want)


def test_mink_by_hand_values():
    # 5 tokens, k=0.4 -> floor(2.0) = 2 lowest: -4 and -3.
    assert get_attack("mink")(make_input(), k=0.4).scores[0] == pytest.approx(-3.5)
    # k=0.2 -> 1 token; 4 tokens with k=0.2 -> floor(0.8) = 0 -> at least 1.
    res = get_attack("mink")(make_input(), k=0.2)
    assert res.scores[:2].tolist() == pytest.approx([-4.0, -6.0])


def test_minkpp():
    mu = [[-2.0, -1.0, -3.0, -0.5, -2.0], [-1.0, -1.0, -1.0, -1.0], [-2.0]]
    sd = [[0.5, 2.0, 1.0, 0.25, 4.0], [1.0, 0.1, 2.0, 0.5], [0.5]]
    inp = make_input()
    inp.target = [ts(lp, m, s) for lp, m, s in zip(T_LP, mu, sd)]
    res = get_attack("minkpp")(inp, k=0.4)
    for i, (lp, m, s) in enumerate(zip(T_LP, mu, sd)):
        z = [(a - b) / c for a, b, c in zip(lp, m, s)]
        assert res.token_scores[i].tolist() == pytest.approx(z)
        n = max(1, math.floor(0.4 * len(z)))
        assert res.scores[i] == pytest.approx(mean(sorted(z)[:n]))
    # text 0: z = [2, -0.5, 0, 0, -0.5] -> two lowest: -0.5, -0.5
    assert res.scores[0] == pytest.approx(-0.5)


def test_minkpp_zero_sigma_stays_finite():
    inp = make_input()
    inp.target = [ts([-0.0, -1.0], [-0.0, -1.0], [0.0, 0.0]) for _ in TEXTS]
    res = get_attack("minkpp")(inp, k=1.0)
    assert np.all(np.isfinite(res.scores))


def test_ref_mean_over_references():
    res = get_attack("ref")(make_input())
    want = [mean(t) - mean([mean(r1), mean(r2)]) for t, r1, r2 in zip(T_LP, R1_LP, R2_LP)]
    assert res.scores.tolist() == pytest.approx(want)
    one = get_attack("ref")(make_input(refs=("r1",)))
    assert one.scores.tolist() == pytest.approx([mean(t) - mean(r) for t, r in zip(T_LP, R1_LP)])


# ---------------------------------------------------------------------------------------------
# RMIA and InfoRMIA, by hand with plain Python floats
# ---------------------------------------------------------------------------------------------


def pr(lp, prob):
    return math.exp(mean(lp)) if prob == "geometric" else math.exp(sum(lp))


def ratio(t_lp, ref_lps, a, prob):
    """Pr(x|theta) / Pr(x) with the offline marginal."""
    pr_ref = mean([pr(r, prob) for r in ref_lps])
    pr_x = 0.5 * ((1 + a) * pr_ref + (1 - a))
    return pr(t_lp, prob) / pr_x


def hand_ratios(a, prob, refs=(R1_LP, R2_LP), prefs=(P_R1_LP, P_R2_LP)):
    x = [ratio(T_LP[i], [r[i] for r in refs], a, prob) for i in range(len(T_LP))]
    z = [ratio(P_T_LP[j], [r[j] for r in prefs], a, prob) for j in range(len(P_T_LP))]
    return x, z


@pytest.mark.parametrize("prob", ["geometric", "sum"])
@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("gamma", [1.0, 0.5, 2.0])
def test_rmia(prob, a, gamma):
    res = get_attack("rmia")(make_input(), a=a, prob=prob, gamma=gamma)
    x, z = hand_ratios(a, prob)
    want = [sum(1 for rz in z if rx / rz >= gamma) / len(z) for rx in x]
    assert res.scores.tolist() == pytest.approx(want)
    assert res.info["population_size"] == 4


def test_rmia_by_hand_numbers():
    # geometric, a = 0.3: check one text's score against explicit arithmetic.
    res = get_attack("rmia")(make_input(), a=0.3, prob="geometric", gamma=1.0)
    x, z = hand_ratios(0.3, "geometric")
    lr = [x[0] / rz for rz in z]
    assert res.scores[0] == pytest.approx(sum(v >= 1.0 for v in lr) / 4)
    # the score takes only |Z| + 1 values
    assert set(np.round(res.scores * 4, 9)).issubset({0, 1, 2, 3, 4})


def test_rmia_sum_mode_does_not_underflow():
    inp = make_input()
    inp.target = [ts([-50.0] * 40) for _ in TEXTS]  # Pr(x) = e^-2000 underflows a float64
    res = get_attack("rmia")(inp, prob="sum")
    assert np.all(np.isfinite(res.scores))


@pytest.mark.parametrize("prob", ["geometric", "sum"])
@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_informia(prob, a):
    res = get_attack("informia")(make_input(), a=a, prob=prob)
    x, z = hand_ratios(a, prob)
    offset = mean([math.log2(v) for v in z])
    assert res.scores.tolist() == pytest.approx([math.log2(v) - offset for v in x], rel=1e-6, abs=1e-7)
    assert res.info["unit"] == "bits"
    assert res.info["population_offset_bits"] == pytest.approx(offset)


def test_informia_population_scores_centre_at_zero():
    """Scoring the population itself gives mean 0 bits."""
    inp = make_input()
    pop = AttackInput(texts=inp.population_texts, target=inp.population_target, references=inp.population_references,
                      population_texts=inp.population_texts, population_target=inp.population_target,
                      population_references=inp.population_references)
    assert get_attack("informia")(pop).scores.mean() == pytest.approx(0.0, abs=1e-12)


def test_informia_without_population_is_uncentred():
    res = get_attack("informia")(make_input(population=False), a=0.3)
    x, _ = hand_ratios(0.3, "geometric")
    assert res.scores.tolist() == pytest.approx([math.log2(v) for v in x])
    assert "note" in res.info


LOG_RATIO = [np.array([0.5, -1.0, 2.0, 0.0, 1.5]), np.array([-0.2, 0.1, 0.3, 3.0]), np.array([1.0])]
KL = [np.array([0.1, 0.2, 0.0, 0.4, 0.3]), np.array([1.0, 0.5, 0.25, 0.0]), np.array([0.7])]


def token_bits(lr, kl):
    return [(a + (b if kl is not None else 0.0)) / math.log(2) for a, b in zip(lr, kl if kl is not None else lr)]


@pytest.mark.parametrize("with_kl", [True, False])
@pytest.mark.parametrize("agg,k", [("mean", 0.2), ("sum", 0.2), ("topk", 0.2), ("topk", 0.5), ("topk", 1.0)])
def test_informia_token(with_kl, agg, k):
    comp = TokenComparison(LOG_RATIO, KL if with_kl else None, "" if with_kl else "no KL")
    res = get_attack("informia_token")(make_input(comparison=comp), agg=agg, k=k)
    assert res.token_unit == "bits"
    assert res.info["kl_term"] is with_kl
    for i in range(3):
        s = token_bits(LOG_RATIO[i].tolist(), KL[i].tolist() if with_kl else None)
        assert res.token_scores[i].tolist() == pytest.approx(s)
        if agg == "mean":
            want = mean(s)
        elif agg == "sum":
            want = sum(s)
        else:
            n = max(1, math.floor(k * len(s)))
            want = mean(sorted(s, reverse=True)[:n])
        assert res.scores[i] == pytest.approx(want)
    if not with_kl:
        assert res.info["note"] == "no KL"


def test_informia_token_by_hand():
    comp = TokenComparison(LOG_RATIO, KL)
    res = get_attack("informia_token")(make_input(comparison=comp), agg="sum")
    # text 2: (1.0 + 0.7) / ln 2
    assert res.scores[2] == pytest.approx(1.7 / math.log(2))
    assert res.token_scores[0][2] == pytest.approx(2.0 / math.log(2))


def test_informia_token_needs_comparison():
    with pytest.raises(AttackError, match="paired"):
        get_attack("informia_token")(make_input(comparison=None))


# ---------------------------------------------------------------------------------------------
# Parameters, requirements, registry
# ---------------------------------------------------------------------------------------------


def test_unknown_parameter():
    with pytest.raises(AttackError, match="no parameter"):
        get_attack("mink")(make_input(), kk=0.2)
    with pytest.raises(AttackError, match="no parameter"):
        get_attack("loss")(make_input(), k=0.2)


def test_bad_choice():
    with pytest.raises(AttackError, match="not one of"):
        get_attack("rmia")(make_input(), prob="arithmetic")
    with pytest.raises(AttackError, match="not one of"):
        get_attack("informia_token")(make_input(comparison=TokenComparison(LOG_RATIO, KL)), agg="max")


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, 20])
def test_k_out_of_range(k):
    with pytest.raises(AttackError, match="k must"):
        get_attack("mink")(make_input(), k=k)
    with pytest.raises(AttackError, match="k must"):
        get_attack("minkpp")(make_input(), k=k)


@pytest.mark.parametrize("a", [-0.1, 1.5])
def test_a_out_of_range(a):
    with pytest.raises(AttackError, match="a must"):
        get_attack("rmia")(make_input(), a=a)
    with pytest.raises(AttackError, match="a must"):
        get_attack("informia")(make_input(), a=a)


def test_gamma_must_be_positive():
    with pytest.raises(AttackError, match="gamma"):
        get_attack("rmia")(make_input(), gamma=0.0)


def test_string_params_are_converted():
    """CLI-style string values become numbers / booleans of the default's type."""
    spec = get_attack("mink")
    assert spec.resolve_params({"k": "0.5"}) == {"k": 0.5}
    assert get_attack("rmia").resolve_params({"gamma": "2"})["gamma"] == 2.0
    with pytest.raises(AttackError, match="k='20%' is not a number"):
        spec.resolve_params({"k": "20%"})


def test_unknown_attack():
    with pytest.raises(AttackError, match="unknown attack"):
        get_attack("nope")
    with pytest.raises(AttackError, match="unknown attack"):
        resolve_attack_names("loss,nope", have_reference=True, have_population=True)


@pytest.mark.parametrize("name", ["ref", "rmia", "informia", "informia_token"])
def test_needs_reference(name):
    with pytest.raises(AttackError, match="needs a reference"):
        get_attack(name)(make_input(refs=()))


def test_needs_population():
    with pytest.raises(AttackError, match="needs population"):
        get_attack("rmia")(make_input(population=False))


def test_population_scored_under_other_references():
    inp = make_input()
    inp.population_references = inp.population_references[:1]
    with pytest.raises(AttackError, match="same reference"):
        get_attack("rmia")(inp)


def test_resolve_all():
    assert resolve_attack_names("all", have_reference=False, have_population=False) == ["loss", "zlib", "mink", "minkpp"]
    with_ref = resolve_attack_names("all", have_reference=True, have_population=False)
    assert "ref" in with_ref and "informia" in with_ref and "rmia" not in with_ref
    assert "rmia" in resolve_attack_names(["all"], have_reference=True, have_population=True)
    assert resolve_attack_names(" loss , mink ", have_reference=False, have_population=False) == ["loss", "mink"]


def test_registry_specs_are_consistent():
    for name, spec in REGISTRY.items():
        assert spec.name == name
        spec.resolve_params({})  # defaults are valid
        assert spec.description


def test_lowest_k_mean_edge_cases():
    assert math.isnan(lowest_k_mean(np.array([]), 0.2))
    assert lowest_k_mean(np.array([3.0, 1.0, 2.0]), 0.34) == 1.0  # floor(1.02) = 1
    assert lowest_k_mean(np.array([3.0, 1.0, 2.0]), 0.67) == 1.5  # floor(2.01) = 2


def test_attack_input_validates_lengths():
    with pytest.raises(ValueError):
        AttackInput(texts=["a", "b"], target=[ts([-1.0])])
    with pytest.raises(ValueError, match="reference"):
        AttackInput(texts=["a"], target=[ts([-1.0])], references=[ReferenceView("r", [])])


def test_empty_stats_give_nan_not_crash():
    inp = AttackInput(texts=["a"], target=[ts([])])
    assert math.isnan(get_attack("loss")(inp).scores[0])
    assert math.isnan(get_attack("mink")(inp).scores[0])


def test_attacks_declare_what_the_pass_must_compute():
    """Audit asks each attack for its extra paired reductions instead of testing attack names."""
    from memlens.attacks import attacks_of_kind
    from memlens.ltmia import load_classifier

    assert get_attack("loss").pass_needs() == ((), {})
    reductions, settings = get_attack("ltmia").pass_needs({})
    assert reductions == ("informia", "ltmia")
    assert settings == load_classifier("default").spec.pair_settings()
    with pytest.raises(AttackError, match="ltmia"):
        get_attack("ltmia").pass_needs({"model": "/nonexistent/clf.safetensors"})
    # the masked-LM attacks are listed once: by their registry entry's model kind
    assert attacks_of_kind("masked") == ("sama", "dlm_loss", "dlm_ref")
    assert "sama" not in attacks_of_kind("causal")


def test_mean64_is_numpys_float64_mean_to_the_bit():
    from memlens.attacks.loss import mean64

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 276, 4097):
        for _ in range(50):
            x = (rng.normal(size=n) * 5).astype(np.float32)
            assert mean64(x) == float(np.mean(x, dtype=np.float64))
