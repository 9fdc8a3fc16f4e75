"""InfoRMIA (Tao & Shokri, ICLR 2026), sequence level and token level. Scores are in bits.

Sequence level: RMIA's indicator 1[LR(x)/LR(z) >= gamma] replaced by its logarithm, averaged
over the population:  score(x) = log2(Pr(x|theta)/Pr(x)) - E_z[log2(Pr(z|theta)/Pr(z))].

Token level: at position t the "population" is the vocabulary distributed by the reference's
prediction q = p_ref(.|x_<t); with p = p_target(.|x_<t):
    s_t = log2(p(x_t)/q(x_t)) + D_KL(q || p)     bits.
The sequence score aggregates s_t: mean (the author's default), sum (total bits), bottomk = mean
of the LOWEST k% (the author's "mink", k = 0.2), or topk = mean of the HIGHEST k% (our addition).
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, lowest_k_mean, register
from memlens.attacks.rmia import RMIA_PARAMS, _Marginals, finish_marginals, per_text_unless_tuned

LN2 = np.log(2.0)


@register(
    "informia",
    description="Information gain in bits: log2 LR(x) minus its population mean (sequence InfoRMIA).",
    params=dict(RMIA_PARAMS),
    needs_reference=True,
    per_text=per_text_unless_tuned,
    finish=finish_marginals,
)
def informia(inp: AttackInput, a: float, tune_a: bool, mode: str, average: str, prob: str) -> AttackResult:
    # tune_a scores candidate a's by the ranking of log2 LR(x) (the population term is a shift).
    m = _Marginals(inp, a=a, tune_a=tune_a, mode=mode, average=average, prob=prob)
    x = m.x / LN2
    info: dict = {"unit": "bits", **m.info}
    if m.z is not None:
        offset = float(np.mean(m.z) / LN2)
        info["population_size"] = len(inp.population_target)
    else:
        # Without a population the scores are shifted by a constant: the ranking (and so every
        # metric) is unchanged, only the natural threshold at 0 bits is lost.
        offset = 0.0
        note = "no population given: scores are not centred (0 bits is not a threshold)"
        info["note"] = f"{info['note']}; {note}" if "note" in info else note
    info["population_offset_bits"] = offset
    return AttackResult(x - offset, info=info)


def token_informia_bits(log_ratio: np.ndarray, kl: np.ndarray | None) -> np.ndarray:
    """s_t in bits from the natural-log log-ratio and KL (KL omitted when unavailable)."""
    s = np.asarray(log_ratio, dtype=np.float64)
    if kl is not None:
        s = s + np.asarray(kl, dtype=np.float64)
    return s / LN2


# "mink" is the InfoRMIA author's name for bottomk, accepted as an alias.
AGGREGATES = ("mean", "sum", "bottomk", "topk", "mink")


def aggregate(tokens: np.ndarray, agg: str, k: float) -> float:
    if tokens.size == 0:
        return float("nan")
    if agg == "mean":
        return float(tokens.mean())
    if agg == "sum":
        return float(tokens.sum())
    if agg in ("bottomk", "mink"):
        # The least-informative k% of tokens: a member must be well predicted everywhere. At least
        # one token (the author's int(k*n) leaves texts under 1/k tokens with an empty mean).
        return lowest_k_mean(tokens, k)
    if agg == "topk":
        return -lowest_k_mean(-tokens, k)
    raise AttackError(f"agg must be one of {AGGREGATES}, got {agg!r}")


@register(
    "informia_token",
    description="Token-level InfoRMIA s_t = log2(p/q)(x_t) + KL(q||p) in bits, aggregated over the text.",
    params={
        "agg": Param("mean", "how token scores make the sequence score: mean, sum (total bits), bottomk = mean of the lowest "
                             "k (the paper's min-k; alias mink) or topk = mean of the highest k", AGGREGATES),
        "k": Param(0.2, "fraction of tokens averaged when agg=bottomk (lowest scores) or agg=topk (highest)"),
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
