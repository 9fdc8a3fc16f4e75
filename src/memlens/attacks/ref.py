"""Reference calibration (Carlini et al. 2021; Mireshghallah et al. 2022).

score = NLL_mean(reference) - NLL_mean(target); with several references, their mean NLL.
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, register
from memlens.attacks.loss import mean_logprob


@register("ref", description="Reference mean NLL minus target mean NLL (mean over references).", needs_reference=True)
def ref(inp: AttackInput) -> AttackResult:
    target_lp = np.array([mean_logprob(s) for s in inp.target])
    ref_lp = np.mean([[mean_logprob(s) for s in r.stats] for r in inp.references], axis=0)
    return AttackResult(target_lp - ref_lp)
