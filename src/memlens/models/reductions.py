"""Vocabulary reductions (torch): from [N, V] logits of N scored positions to per-token statistics.

They run in row chunks (see :class:`memlens.models.causal.CausalScorer`), so a float32 copy of
the logits exists for at most ``chunk`` rows at a time. The single-model reduction fills
:class:`memlens.stats.TokenStats`; paired reductions (:data:`PAIR_REDUCTIONS`) run while the
target's and a reference's logits are both in memory (token-level InfoRMIA's D_KL, LT-MIA's block).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from memlens.stats import LTMIA_SPACES  # the block's layout lives with the types


def single_model_reductions(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row statistics of one model's logits [N, V] (any dtype) for true tokens [N].

    Written as moments of the shifted logits y = x - max(x) under w = exp(y), so that one pass
    over the row after the max gives everything (a compiler fuses it into one kernel):
    s0 = sum w, s1 = sum w y, s2 = sum w y^2;  log Z = max + log s0;
    mu = E_p[log p] = s1/s0 - log s0;  sigma^2 = Var_p[log p] = Var_p[y] = s2/s0 - (s1/s0)^2.
    """
    x = logits.float()
    m = x.amax(dim=-1, keepdim=True)
    y = x - m
    w = y.exp()
    s0 = w.sum(-1)
    s1 = (w * y).sum(-1)
    s2 = (w * y * y).sum(-1)
    log_s0 = s0.log()
    ey = s1 / s0
    true_logit = x.gather(-1, targets[:, None])
    mean_logp = ey - log_s0
    return {
        "logprob": true_logit.squeeze(-1) - m.squeeze(-1) - log_s0,
        "entropy": -mean_logp,
        "mean_logp": mean_logp,
        "std_logp": (s2 / s0 - ey * ey).clamp_min(0.0).sqrt(),
        # rank counts strictly larger logits, so ties share the best rank.
        "rank": (x > true_logit).sum(-1) + 1,
    }


PairReduction = Callable[..., dict[str, torch.Tensor]]
# name -> function(logp_target [N,V] fp32, logp_ref [N,V] fp32, targets [N], **settings)
PAIR_REDUCTIONS: dict[str, PairReduction] = {}


def register_pair_reduction(name: str):
    """Register a paired reduction: computed while target and reference logits are in memory."""

    def deco(fn: PairReduction) -> PairReduction:
        PAIR_REDUCTIONS[name] = fn
        return fn

    return deco


@register_pair_reduction("informia")
def _informia_pair(logp_t: torch.Tensor, logp_r: torch.Tensor, targets: torch.Tensor, **_) -> dict[str, torch.Tensor]:
    """D_KL(q || p) and log p(x_t) - log q(x_t), with p the target and q the reference (nats)."""
    q = logp_r.exp()
    kl = (q * (logp_r - logp_t)).sum(-1).clamp_min(0.0)
    lr = logp_t.gather(-1, targets[:, None]).squeeze(-1) - logp_r.gather(-1, targets[:, None]).squeeze(-1)
    return {"kl_ref_target": kl, "log_ratio": lr}


def apply_pair_reductions(
    logp_t: torch.Tensor, logp_r: torch.Tensor, targets: torch.Tensor, names: tuple[str, ...] = ("informia",), **settings
) -> dict[str, torch.Tensor]:
    """Run the named paired reductions on [N, V] float32 log-probabilities of target and reference.

    Reductions receive ``logp_t``, ``logp_r`` and ``targets`` plus the settings as keywords
    (the raw logits, when known, as ``logits_t`` / ``logits_r``)."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name not in PAIR_REDUCTIONS:
            raise KeyError(f"unknown paired reduction {name!r}; known: {sorted(PAIR_REDUCTIONS)}")
        out.update(PAIR_REDUCTIONS[name](logp_t, logp_r, targets, **settings))
    return out


def pair_reductions(
    logits_t: torch.Tensor,
    logits_r: torch.Tensor | list[torch.Tensor],
    targets: torch.Tensor,
    names: tuple[str, ...] = ("informia",),
    temperature: float = 1.0,
    **settings,
) -> dict[str, torch.Tensor]:
    """Paired reductions from [N, V] logits of the target and one or several references.

    The temperature divides both models' logits. With several references, q is the mean of their
    next-token distributions."""
    refs = logits_r if isinstance(logits_r, (list, tuple)) else [logits_r]
    lt = torch.log_softmax(logits_t.float() / temperature, dim=-1)
    lrs = [torch.log_softmax(r.float() / temperature, dim=-1) for r in refs]
    if len(lrs) == 1:
        lq = lrs[0]
    else:
        lq = torch.logsumexp(torch.stack(lrs), 0) - math.log(len(lrs))
    extra = {"logits_t": logits_t, "logits_r": refs[0]} if len(refs) == 1 else {"logits_t": logits_t}
    return apply_pair_reductions(lt, lq, targets, names, **extra, **settings)


# ---------------------------------------------------------------------------------------------
# LT-MIA (Ilic et al. 2026): the per-token block of features that needs both models' full
# distributions. The rest of LT-MIA's features (NLLs and their text-level moments) come from
# each model's TokenStats; memlens.ltmia.features assembles the whole vector.
# ---------------------------------------------------------------------------------------------
def _count_greater(sorted_asc: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """For each row, how many entries of the row (given sorted ascending) are strictly greater
    than each of ``values`` [N, m]: V - #(entries <= value)."""
    v = sorted_asc.shape[-1]
    return v - torch.searchsorted(sorted_asc, values.contiguous(), right=True)


@register_pair_reduction("ltmia")
def _ltmia_pair(logp_t: torch.Tensor, logp_r: torch.Tensor, targets: torch.Tensor, *, ltmia_k: int = 20,
                ltmia_space: str = "logprob", logits_t: torch.Tensor | None = None, logits_r: torch.Tensor | None = None,
                **_) -> dict[str, torch.Tensor]:
    """LT-MIA's paired per-token block, [N, 7k + 4] float32, in the authors' order:

    * truth (4): the true token's score under target and reference, shifted by the larger of the
      two; log1p(rank)/log(V+1) of the true token under each model (rank 1 = most likely);
    * head (4k), interleaved per j = 1..k: the target's j-th largest score, the reference's score
      at that index (the pair shifted by its max), log-rank of that index in the reference, and
      log-rank of the reference's j-th largest index in the target;
    * tail (3k), interleaved: the same for the target's j-th smallest scores (no reverse rank).

    "Score" is the log-probability (``ltmia_space="logprob"``, the default: invariant to the
    per-position offset a softmax ignores, and defined for a mixture of references) or the raw
    logit, as in the authors' code (``"logit"``; needs the raw logits of a single reference, else
    it falls back to log-probabilities). Ranks count strictly larger scores, plus one.
    """
    if ltmia_space not in LTMIA_SPACES:
        raise ValueError(f"ltmia_space must be one of {LTMIA_SPACES}, got {ltmia_space!r}")
    if ltmia_space == "logit" and logits_t is not None and logits_r is not None:
        a, b = logits_t.float(), logits_r.float()
        v = min(a.shape[-1], b.shape[-1])
        a, b = a[:, :v], b[:, :v]
    else:
        a, b = logp_t, logp_r
    # -inf scores (masked vocabulary entries) would make the pairwise shifts NaN.
    a, b = a.clamp_min(-1e4), b.clamp_min(-1e4)
    n, v = a.shape
    k = int(ltmia_k)
    if not 0 < k <= v:
        raise ValueError(f"ltmia_k must be in [1, {v}], got {k}")
    log_v = math.log(v + 1)

    def lrank(r: torch.Tensor) -> torch.Tensor:
        return torch.log1p(r.float()) / log_v

    t_idx = targets[:, None]
    gt_a, gt_b = a.gather(-1, t_idx), b.gather(-1, t_idx)
    rank_a = (a > gt_a).sum(-1) + 1
    rank_b = (b > gt_b).sum(-1) + 1
    gt_max = torch.maximum(gt_a, gt_b)
    truth = torch.stack([(gt_a - gt_max)[:, 0], (gt_b - gt_max)[:, 0], lrank(rank_a), lrank(rank_b)], dim=-1)

    top_val, top_idx = a.topk(k, dim=-1, largest=True, sorted=True)
    bot_val, bot_idx = a.topk(k, dim=-1, largest=False, sorted=True)
    ref_top_idx = b.topk(k, dim=-1, largest=True, sorted=True).indices
    b_at = b.gather(-1, torch.cat([top_idx, bot_idx], dim=-1))  # reference scores at the target's indices
    cross = _count_greater(b.sort(dim=-1).values, b_at) + 1
    rev = _count_greater(a.sort(dim=-1).values, a.gather(-1, ref_top_idx)) + 1

    b_top, b_bot = b_at[:, :k], b_at[:, k:]
    head_max = torch.maximum(top_val, b_top)
    head = torch.stack([top_val - head_max, b_top - head_max, lrank(cross[:, :k]), lrank(rev)], dim=-1).reshape(n, 4 * k)
    tail_max = torch.maximum(bot_val, b_bot)
    tail = torch.stack([bot_val - tail_max, b_bot - tail_max, lrank(cross[:, k:])], dim=-1).reshape(n, 3 * k)
    return {"ltmia": torch.cat([truth, head, tail], dim=-1)}
