"""Loss baselines adapted to masked diffusion LMs (the baselines of the SAMA paper).

Both read ``inp.extras["masked"]`` (see :mod:`memlens.attacks.sama`): the NLL of every masked
position at each of the S masking steps of the masked-LM pass.

* ``dlm_loss``: minus the target's masked loss, averaged over the random masks (the masked-LM
  analogue of the ``loss`` attack; a Monte-Carlo estimate of the diffusion ELBO's per-token loss).
* ``dlm_ref``: the reference-calibrated loss, mean (reference NLL - target NLL) on the same masked
  positions (the analogue of ``ref``; SAMA without subsets, sign votes and step weights).

``agg="steps"`` (default) averages each step's mean over masked positions, so every masking
configuration counts once; ``agg="tokens"`` pools all (step, position) pairs, so dense steps count more.
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, register
from memlens.attacks.sama import masked_extras

AGGS = ("steps", "tokens")


def masked_mean(values: np.ndarray, mask: np.ndarray, agg: str = "steps") -> float:
    """Mean of ``values[t, i]`` over masked (t, i): per step then over steps, or pooled."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    if agg == "tokens":
        return float(values[mask].mean())
    if agg != "steps":
        raise AttackError(f"agg must be one of {AGGS}, got {agg!r}")
    per_step = [values[t, mask[t]].mean() for t in range(mask.shape[0]) if mask[t].any()]
    return float(np.mean(per_step))


_AGG = Param("steps", "average per masking step then over steps (steps), or over all masked tokens pooled (tokens)", AGGS)


@register(
    "dlm_loss",
    description="Minus the target's mean masked-token loss over the random masks (loss attack for diffusion LMs).",
    params={"agg": _AGG},
    model_kind="masked",
)
def dlm_loss(inp: AttackInput, agg: str) -> AttackResult:
    ex = masked_extras(inp, need_reference=False)
    return AttackResult(np.array([-masked_mean(p.nll_target, p.mask, agg) for p in ex.probes]))


@register(
    "dlm_ref",
    description="Mean reference-minus-target masked-token loss on the same masks (reference-calibrated loss for diffusion LMs).",
    params={"agg": _AGG},
    needs_reference=True,
    model_kind="masked",
)
def dlm_ref(inp: AttackInput, agg: str) -> AttackResult:
    ex = masked_extras(inp, need_reference=True)
    return AttackResult(np.array([masked_mean(p.nll_ref.astype(np.float64) - p.nll_target, p.mask, agg)
                                  for p in ex.probes]))
