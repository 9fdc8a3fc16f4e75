"""Min-K%++ (Zhang et al. 2024): Min-K% over log-probabilities standardized per position.

s_t = (log p(x_t|x_<t) - mu_t) / sigma_t with mu_t, sigma_t the mean and standard deviation of
log p(v|x_<t) for v drawn from the model's own next-token distribution.
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, Param, lowest_k_mean, register

# A position where the model is certain has sigma_t = 0; floor it so s_t stays finite.
SIGMA_FLOOR = 1e-6


def minkpp_token_scores(stats) -> np.ndarray:
    sigma = np.maximum(stats.std_logp.astype(np.float64), SIGMA_FLOOR)
    return (stats.logprob.astype(np.float64) - stats.mean_logp) / sigma


@register(
    "minkpp",
    description="Mean of the k% lowest standardized token log-probabilities (log p - mu) / sigma.",
    params={"k": Param(0.2, "fraction of tokens with the lowest standardized score to average")},
)
def minkpp(inp: AttackInput, k: float) -> AttackResult:
    tokens = [minkpp_token_scores(s) for s in inp.target]
    return AttackResult(np.array([lowest_k_mean(t, k) for t in tokens]), token_scores=tokens, token_unit="z")
