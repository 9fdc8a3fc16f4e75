"""Tuning RMIA's offline constant ``a`` by grid search, as Privacy Meter's ``tune_offline_a`` does.

Offline RMIA approximates Pr(x) = ½(Pr_IN(x) + Pr_OUT(x)) from OUT references only, as
½((1+a)·Pr_OUT(x) + (1−a)). The best ``a`` depends on how much training lifts a member's
probability, which is a property of the training recipe, not of the attack. When reference models
with known splits exist, one of them can play the target: attack it with ``a`` on a grid, using
the others as OUT references, score the attack by AUC against its known membership, keep the ``a``
with the best AUC. Everything here is a pure numpy function of log-probabilities.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from memlens.attacks.base import AttackError
from memlens.metrics import auc

# Privacy Meter's grid: 0, 0.1, ..., 1.0.
A_GRID = np.round(np.arange(11) / 10.0, 1)


def offline_log_marginal(log_pr_out: np.ndarray, a: float) -> np.ndarray:
    """log Pr(x) = log(½((1+a)·Pr_OUT(x) + (1−a))) from log Pr_OUT(x), in log space (no underflow)."""
    if not 0.0 <= a <= 1.0:
        raise AttackError(f"a must lie in [0, 1], got {a}")
    log_pr_out = np.asarray(log_pr_out, dtype=np.float64)
    if a == 1.0:
        return log_pr_out
    return np.log(0.5) + np.logaddexp(np.log1p(a) + log_pr_out, np.log1p(-a))


def reference_weight(log_pr_out: np.ndarray, a: float) -> np.ndarray:
    """d log Pr(x) / d log Pr_OUT(x) = (1+a)Pr_OUT / ((1+a)Pr_OUT + 1−a): how much of the marginal is
    the reference at all (1 for a = 1; near 0 when Pr_OUT is tiny, e.g. a full-sequence probability)."""
    log_pr_out = np.asarray(log_pr_out, dtype=np.float64)
    if a == 1.0:
        return np.ones_like(log_pr_out)
    num = np.log1p(a) + log_pr_out
    return np.exp(num - np.logaddexp(num, np.log1p(-a)))


@dataclass
class TuneCase:
    """One reference model attacked as if it were the target.

    ``target_lp``: its log Pr(x|θ_r) of each labelled text; ``labels``: True where it trained on the
    text; ``out_lp``: log Pr_OUT(x), the average over the *other* references that are OUT for x.
    ``pop_target_lp`` / ``pop_out_lp``: the same for population texts (for RMIA's pairwise score)."""

    target_lp: np.ndarray
    labels: np.ndarray
    out_lp: np.ndarray
    pop_target_lp: np.ndarray | None = None
    pop_out_lp: np.ndarray | None = None


ScoreFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def ratio_score(x: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """Sequence InfoRMIA's ranking: log(Pr(x|θ)/Pr(x)) (the population term is a constant shift)."""
    return x


def tune_offline_a(cases: list[TuneCase], score: ScoreFn = ratio_score, grid: np.ndarray = A_GRID) -> tuple[float, np.ndarray]:
    """The ``a`` in ``grid`` with the best AUC, averaged over ``cases``, and the mean AUC at each grid point.

    ``score(log_ratio_x, log_ratio_z)`` turns the log likelihood ratios of the labelled texts (and of
    the population, or None) into membership scores. Ties go to the smaller ``a``, as in Privacy
    Meter (its loop keeps the first strict improvement on an ascending grid)."""
    cases = [c for c in cases if len(np.unique(np.asarray(c.labels, dtype=bool))) == 2]
    if not cases:
        raise AttackError("tuning a needs a reference model trained on some but not all of the texts it is tested on")
    aucs = np.zeros(len(grid))
    for c in cases:
        for i, a in enumerate(grid):
            x = np.asarray(c.target_lp, dtype=np.float64) - offline_log_marginal(c.out_lp, float(a))
            z = None
            if c.pop_target_lp is not None and c.pop_out_lp is not None:
                z = np.asarray(c.pop_target_lp, dtype=np.float64) - offline_log_marginal(c.pop_out_lp, float(a))
            aucs[i] += auc(c.labels, score(x, z))
    aucs /= len(cases)
    return float(grid[int(np.argmax(aucs))]), aucs
