"""Min-K% Prob (Shi et al. 2024): the mean of the k% lowest token log-probabilities."""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, Param, lowest_k_mean, register


@register(
    "mink",
    description="Mean of the k% lowest token log-probabilities under the target.",
    params={"k": Param(0.2, "fraction of tokens with the lowest log-probability to average")},
)
def mink(inp: AttackInput, k: float) -> AttackResult:
    return AttackResult(np.array([lowest_k_mean(s.logprob, k) for s in inp.target]))
