"""SAMA (Chen et al., ICLR 2026): subset-aggregated membership attack on masked diffusion LMs.

Inputs: ``inp.extras["masked"]``, a :class:`memlens.models.masked.MaskedExtras` (made by
:func:`memlens.models.masked.score_masked`): per text, S masking steps of increasing density
(``alpha_t`` from 5% to 50% by default) and, for every masked position, the NLL under the
fine-tuned target and under the reference (its base) on the same masked input.

Per text and step t, with K_t the masked positions:
  1. draw N (default 128) random subsets of m (default 10) positions of K_t (without replacement
     within a subset; all of K_t when |K_t| <= m);
  2. Delta^n = mean_{i in subset n} nll_ref[t, i] - mean_{i in subset n} nll_target[t, i];
  3. vote B^n = 1[Delta^n > 0] (ties vote 0); beta_t = mean_n B^n;
score = sum_t w_t beta_t, w_t = (1/t) / sum_i (1/i)  (default; "uniform" weights are an ablation).
The score lies in [0, 1]; for a non-member every vote is (about) a fair coin whatever the noise.

The subsets of a text are drawn from a generator seeded by (``seed``, the text's SHA-256, step),
so a text's score does not depend on the other texts, their order or the batching.
"""
from __future__ import annotations

import warnings

import numpy as np

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, register
from memlens.cache import text_hash

WEIGHTINGS = ("inverse", "uniform")
LOSS_MODES = ("current", "first")
PURPOSE_SUBSETS = 1  # = memlens.models.masked.PURPOSE_SUBSETS (kept here so attacks need no torch import)


def masked_extras(inp: AttackInput, *, need_reference: bool):
    """``inp.extras["masked"]``, checked against the texts (order and count)."""
    ex = inp.extras.get("masked")
    if ex is None:
        raise AttackError("this attack runs on masked / diffusion LMs: it needs the masked-LM pass (--model-kind masked), "
                          "i.e. AttackInput.extras['masked'] from memlens.models.masked.score_masked")
    if len(ex.probes) != len(inp):
        raise AttackError(f"masked-LM data covers {len(ex.probes)} texts, the input has {len(inp)}")
    for i, (k, t) in enumerate(zip(ex.keys, inp.texts)):
        if k != text_hash(t):
            raise AttackError(f"masked-LM data of text {i} belongs to another text (misaligned extras)")
    if need_reference and not ex.has_reference:
        raise AttackError("this attack needs a reference model's masked losses (--reference)")
    return ex


def step_weights(n_steps: int, weighting: str = "inverse") -> np.ndarray:
    """w_t = (1/t)/sum_i(1/i) for t = 1..T ("inverse"), or 1/T ("uniform")."""
    if weighting == "inverse":
        w = 1.0 / np.arange(1, n_steps + 1, dtype=np.float64)
    elif weighting == "uniform":
        w = np.ones(n_steps, dtype=np.float64)
    else:
        raise AttackError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return w / w.sum()


def sample_subsets(k: int, num_subsets: int, subset_size: int, rng: np.random.Generator) -> np.ndarray:
    """[N, min(m, k)] indices into k masked positions; each row is drawn without replacement."""
    m = min(int(subset_size), k)
    if k == 0 or m == 0:
        return np.zeros((num_subsets, 0), dtype=np.int64)
    keys = rng.random((num_subsets, k))
    return np.argsort(keys, axis=1, kind="stable")[:, :m].astype(np.int64)


def vote_fraction(nll_target: np.ndarray, nll_ref: np.ndarray, subsets: np.ndarray) -> float:
    """beta = mean_n 1[mean(nll_ref[S_n]) - mean(nll_target[S_n]) > 0] over the rows S_n of ``subsets``."""
    if subsets.shape[1] == 0:
        return float("nan")
    t = np.asarray(nll_target, dtype=np.float64)[subsets]
    r = np.asarray(nll_ref, dtype=np.float64)[subsets]
    delta = r.mean(axis=1) - t.mean(axis=1)
    return float(np.mean(delta > 0))


def step_losses(mask: np.ndarray, nll: np.ndarray, losses: str = "current") -> np.ndarray:
    """[S, L] loss of each masked position at each step.

    "current": the loss under step t's own mask (nll as recorded). "first": the loss recorded at
    the step that first masked the position, kept for later steps (the authors' code; needs nested
    masks).
    """
    if losses == "current":
        return nll
    if losses != "first":
        raise AttackError(f"losses must be one of {LOSS_MODES}, got {losses!r}")
    if mask.shape[0] > 1 and not np.all(mask[1:] >= mask[:-1]):
        raise AttackError("losses='first' needs nested (progressive) masks; this masked pass drew independent masks")
    first = np.where(mask.any(axis=0), mask.argmax(axis=0), 0)
    frozen = nll[first, np.arange(mask.shape[1])]
    return np.where(mask, frozen[None, :], np.nan)


def sama_betas(mask: np.ndarray, nll_target: np.ndarray, nll_ref: np.ndarray, key: str, *, num_subsets: int = 128,
               subset_size: int = 10, losses: str = "current", seed: int = 0) -> np.ndarray:
    """beta_t of one text for every step t (NaN for a step that masks nothing)."""
    tl = step_losses(mask, nll_target, losses)
    rl = step_losses(mask, nll_ref, losses)
    betas = np.full(mask.shape[0], np.nan)
    for t in range(mask.shape[0]):
        pos = np.nonzero(mask[t])[0]
        if len(pos) == 0:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([int(key, 16), int(seed), PURPOSE_SUBSETS, t]))
        betas[t] = vote_fraction(tl[t, pos], rl[t, pos], sample_subsets(len(pos), num_subsets, subset_size, rng))
    return betas


def combine_steps(betas: np.ndarray, weighting: str = "inverse") -> float:
    """sum_t w_t beta_t; NaN when no step masked anything."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.size == 0 or np.all(np.isnan(betas)):
        return float("nan")
    w = step_weights(len(betas), weighting)
    ok = ~np.isnan(betas)
    return float(np.sum(w[ok] * betas[ok]) / np.sum(w[ok]))


SAMA_PARAMS = {
    "num_subsets": Param(128, "N: random subsets of masked positions drawn per step"),
    "subset_size": Param(10, "m: masked positions per subset (all of them when a step masks fewer)"),
    "weighting": Param("inverse", "step weights: inverse (w_t proportional to 1/t, the paper) or uniform", WEIGHTINGS),
    "losses": Param("current", "a position's loss at step t: under step t's mask (current, the paper's l(x; S_t)) or kept "
                               "from the step that first masked it (first, the authors' code; needs nested masks)", LOSS_MODES),
    "seed": Param(0, "seed of the subset sampling (combined with each text's SHA-256 and the step)"),
}


@register(
    "sama",
    description="SAMA: sign votes of reference-minus-target masked loss on random token subsets, over progressive "
                "mask densities, inverse-step weighted (masked / diffusion LMs).",
    params=SAMA_PARAMS,
    needs_reference=True,
    model_kind="masked",
)
def sama(inp: AttackInput, num_subsets: int, subset_size: int, weighting: str, losses: str, seed: int) -> AttackResult:
    ex = masked_extras(inp, need_reference=True)
    if int(num_subsets) < 1 or int(subset_size) < 1:
        raise AttackError("num_subsets and subset_size must be at least 1")
    betas = np.array([sama_betas(p.mask, p.nll_target, p.nll_ref, k, num_subsets=int(num_subsets),
                                 subset_size=int(subset_size), losses=losses, seed=int(seed))
                      for p, k in zip(ex.probes, ex.keys)]).reshape(len(ex.probes), -1)
    scores = np.array([combine_steps(b, weighting) for b in betas])
    n_steps = betas.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps that masked nothing in any text (empty texts)
        beta_mean = np.nanmean(betas, axis=0).tolist() if betas.size else []
    info = {
        "steps": n_steps, "alphas": [round(float(a), 6) for a in ex.alphas], "weights": step_weights(n_steps, weighting).tolist(),
        "beta_mean_per_step": beta_mean,
        "pass": dict(ex.settings),
    }
    if ex.notes:
        info["notes"] = list(ex.notes)
    return AttackResult(scores, info=info)
