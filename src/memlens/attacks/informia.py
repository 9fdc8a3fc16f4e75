"""InfoRMIA (Tao & Shokri, ICLR 2026), sequence level and token level. Scores are in bits.

Sequence level: RMIA's indicator 1[LR(x)/LR(z) >= gamma] replaced by its logarithm, averaged
over the population:  score(x) = log2(Pr(x|theta)/Pr(x)) - E_z[log2(Pr(z|theta)/Pr(z))].

Token level: at position t the "population" is the vocabulary distributed by the reference's
prediction q = p_ref(.|x_<t); with p = p_target(.|x_<t):
    s_t = log2(p(x_t)/q(x_t)) + D_KL(q || p)     bits.
The sequence score aggregates s_t (mean, sum = total bits, or mean of the top-k%).
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, lowest_k_mean, register
from memlens.attacks.rmia import RMIA_PARAMS, _population_ratios, log_likelihood_ratios

LN2 = np.log(2.0)


@register(
    "informia",
    description="Information gain in bits: log2 LR(x) minus its population mean (sequence InfoRMIA).",
    params=dict(RMIA_PARAMS),
    needs_reference=True,
)
def informia(inp: AttackInput, a: float, prob: str) -> AttackResult:
    x = log_likelihood_ratios(inp.target, inp.references, prob, a) / LN2
    info: dict = {"unit": "bits"}
    if inp.population_target:
        offset = float(np.mean(_population_ratios(inp, prob, a)) / LN2)
        info["population_size"] = len(inp.population_target)
    else:
        # Without a population the scores are shifted by a constant: the ranking (and so every
        # metric) is unchanged, only the natural threshold at 0 bits is lost.
        offset = 0.0
        info["note"] = "no population given: scores are not centred (0 bits is not a threshold)"
    info["population_offset_bits"] = offset
    return AttackResult(x - offset, info=info)


def token_informia_bits(log_ratio: np.ndarray, kl: np.ndarray | None) -> np.ndarray:
    """s_t in bits from the natural-log log-ratio and KL (KL omitted when unavailable)."""
    s = np.asarray(log_ratio, dtype=np.float64)
    if kl is not None:
        s = s + np.asarray(kl, dtype=np.float64)
    return s / LN2


AGGREGATES = ("mean", "sum", "topk")


def aggregate(tokens: np.ndarray, agg: str, k: float) -> float:
    if tokens.size == 0:
        return float("nan")
    if agg == "mean":
        return float(tokens.mean())
    if agg == "sum":
        return float(tokens.sum())
    if agg == "topk":
        return -lowest_k_mean(-tokens, k)
    raise AttackError(f"agg must be one of {AGGREGATES}, got {agg!r}")


@register(
    "informia_token",
    description="Token-level InfoRMIA s_t = log2(p/q)(x_t) + KL(q||p) in bits, aggregated over the text.",
    params={
        "agg": Param("mean", "how token scores make the sequence score: mean, sum (total bits) or topk", AGGREGATES),
        "k": Param(0.2, "fraction of highest-scoring tokens averaged when agg=topk"),
    },
    needs_reference=True,
)
def informia_token(inp: AttackInput, agg: str, k: float) -> AttackResult:
    comp = inp.comparison
    if comp is None:
        raise AttackError("informia_token needs the paired target/reference pass (a reference model)")
    kls = comp.kl if comp.kl is not None else [None] * len(inp)
    tokens = [token_informia_bits(lr, kl) for lr, kl in zip(comp.log_ratio, kls)]
    info = {"unit": "bits", "kl_term": comp.kl is not None}
    if comp.note:
        info["note"] = comp.note
    return AttackResult(np.array([aggregate(t, agg, k) for t in tokens]), token_scores=tokens, token_unit="bits", info=info)
