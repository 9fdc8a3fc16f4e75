"""Loss attack (Yeom et al. 2018): the mean token log-probability, -NLL_mean."""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, register


def mean_logprob(stats) -> float:
    return mean64(stats.logprob) if len(stats) else float("nan")


def mean64(values: np.ndarray) -> float:
    """``np.mean(values, dtype=float64)`` for a non-empty 1-d array: the same float64 sum divided by the count,
    at a third of np.mean's per-call cost (five attacks take it of every text)."""
    return float(np.add.reduce(values, dtype=np.float64) / values.size)


@register("loss", description="Mean token log-probability under the target (= -mean NLL).")
def loss(inp: AttackInput) -> AttackResult:
    return AttackResult(np.array([mean_logprob(s) for s in inp.target]))
