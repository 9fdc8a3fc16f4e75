"""RMIA (Zarifzadeh, Liu, Shokri, Lin, ICML 2024), offline, for sequences.

Pr(x|theta) is exp(mean_t log p(x_t|x_<t)) ("geometric", the default) or the full sequence
probability ("sum"). Offline, Pr(x) = 1/2 ((1+a) mean_r Pr(x|theta'_r) + (1-a)).
LR(x, z) = (Pr(x|theta)/Pr(x)) / (Pr(z|theta)/Pr(z)); score(x) = fraction of population z with
LR(x, z) >= gamma. All in log space: the full sequence probability underflows float64.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, register

PROB_CHOICES = ("geometric", "sum")


def log_seq_prob(stats, prob: str) -> float:
    """log Pr(x|model) for one text's statistics."""
    if prob == "geometric":
        return float(np.mean(stats.logprob, dtype=np.float64))
    if prob == "sum":
        return float(np.sum(stats.logprob, dtype=np.float64))
    raise AttackError(f"prob must be one of {PROB_CHOICES}, got {prob!r}")


def log_marginal(ref_log_probs: np.ndarray, a: float) -> np.ndarray:
    """log Pr(x) from reference log-probabilities [R, n] with RMIA's offline correction."""
    if not 0.0 <= a <= 1.0:
        raise AttackError(f"a must lie in [0, 1], got {a}")
    r = ref_log_probs.shape[0]
    mean_ref = logsumexp(ref_log_probs, axis=0) - np.log(r)
    if a == 1.0:
        return mean_ref  # online limit: references' mean is the marginal itself
    return np.log(0.5) + np.logaddexp(np.log1p(a) + mean_ref, np.log1p(-a))


def log_likelihood_ratios(target_stats, references, prob: str, a: float) -> np.ndarray:
    """log(Pr(x|theta) / Pr(x)) for each text."""
    lt = np.array([log_seq_prob(s, prob) for s in target_stats])
    lr = np.array([[log_seq_prob(s, prob) for s in ref.stats] for ref in references])
    return lt - log_marginal(lr, a)


RMIA_PARAMS = {
    "a": Param(0.3, "offline scaling of the reference marginal, Pr(x) = ((1+a) mean_r Pr(x|ref) + 1-a) / 2"),
    "prob": Param("geometric", "sequence probability: geometric-mean token probability or the full product", PROB_CHOICES),
}


def _population_ratios(inp: AttackInput, prob: str, a: float) -> np.ndarray:
    if len(inp.population_references) != len(inp.references):
        raise AttackError("the population must be scored under the same reference models as the audited texts")
    return log_likelihood_ratios(inp.population_target, inp.population_references, prob, a)


@register(
    "rmia",
    description="Fraction of population texts z with LR(x, z) >= gamma (offline RMIA).",
    params={**RMIA_PARAMS, "gamma": Param(1.0, "likelihood-ratio threshold gamma")},
    needs_reference=True,
    needs_population=True,
)
def rmia(inp: AttackInput, a: float, prob: str, gamma: float) -> AttackResult:
    if gamma <= 0:
        raise AttackError(f"gamma must be positive, got {gamma}")
    x = log_likelihood_ratios(inp.target, inp.references, prob, a)
    z = np.sort(_population_ratios(inp, prob, a))
    # LR(x,z) >= gamma  <=>  log ratio(z) <= log ratio(x) - log gamma
    counts = np.searchsorted(z, x - np.log(gamma), side="right")
    return AttackResult(counts / len(z), info={"population_size": int(len(z))})
