"""Reference calibration (Carlini et al. 2021; Mireshghallah et al. 2022).

score = NLL_mean(reference) - NLL_mean(target); with several references, their mean NLL. With
reference models of known splits (``AttackInput.reference_membership``), only the references that
never trained on a text calibrate it: an IN reference has already learned the text and would cancel
the very signal the attack looks for.
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, register
from memlens.attacks.loss import mean_logprob
from memlens.attacks.rmia import average_log_probs


@register("ref", description="Reference mean NLL minus target mean NLL (mean over references; OUT ones with splits).",
          needs_reference=True)
def ref(inp: AttackInput) -> AttackResult:
    target_lp = np.array([mean_logprob(s) for s in inp.target])
    lp = np.array([[mean_logprob(s) for s in r.stats] for r in inp.references])
    if inp.reference_membership is None:
        return AttackResult(target_lp - lp.mean(axis=0))
    ref_lp = average_log_probs(lp, "logmean", ~inp.reference_membership)
    info = {}
    none_out = np.isnan(ref_lp)
    if none_out.any():
        ref_lp[none_out] = lp[:, none_out].mean(axis=0)
        info["note"] = f"{int(none_out.sum())} text(s) had no OUT reference: calibrated by the mean of all references"
    return AttackResult(target_lp - ref_lp, info=info)
