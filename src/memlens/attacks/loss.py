"""Loss attack (Yeom et al. 2018): the mean token log-probability, -NLL_mean."""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, register


def mean_logprob(stats) -> float:
    return float(np.mean(stats.logprob, dtype=np.float64)) if len(stats) else float("nan")


@register("loss", description="Mean token log-probability under the target (= -mean NLL).")
def loss(inp: AttackInput) -> AttackResult:
    return AttackResult(np.array([mean_logprob(s) for s in inp.target]))
