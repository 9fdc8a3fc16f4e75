"""Honest evaluation: ROC AUC, TPR at fixed FPR, confidence intervals, ROC curves.

TPR at FPR f is read off the ROC curve by linear interpolation between its vertices (as
``np.interp`` over scikit-learn's ``roc_curve``; at a vertical step the best TPR). With n
non-members the smallest FPR the data can resolve is 1/n, so a TPR at f < 1/n is refused
(reported as None with a note), never printed as a meaningless number.

Everything is computed from counts per distinct score value, for many weightings at once: the
data itself is the weighting "every text once", a bootstrap resample is "text i drawn c_i times".
So the point estimates and all bootstrap resamples go through one numpy code path (chunks of
resamples bound the memory to ``chunk × n_distinct_scores`` integers), with no per-resample
scikit-learn call. AUC is the Mann–Whitney statistic (ties count one half).

Intervals (named per metric in ``AttackMetrics.ci_method``): percentile bootstrap, resampling
members and non-members separately. Where the bootstrap collapses (its interval has zero width,
as for an AUC of 1.0: every resample separates perfectly too), it says nothing about the
uncertainty, and a non-degenerate interval replaces it: for AUC the score-type interval that
inverts the Hanley–McNeil variance (Newcombe 2006), for TPR the exact Clopper–Pearson interval on
the members (the threshold at that FPR held fixed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memlens.errors import MetricsError  # noqa: F401  (re-exported: its old home)

DEFAULT_FPRS = (0.001, 0.01, 0.05)
CI_BOOTSTRAP = "bootstrap percentile"
CI_AUC_SCORE = "score interval, Hanley-McNeil variance (Newcombe 2006): the bootstrap collapsed"
CI_CLOPPER_PEARSON = "Clopper-Pearson exact on the members, threshold held fixed: the bootstrap collapsed"
# Resamples per numpy chunk: a chunk holds a few [chunk, n_distinct] int arrays, so the chunk shrinks
# as the number of distinct scores grows, to at most BOOTSTRAP_CELLS cells (16 MB an int32 array).
BOOTSTRAP_CHUNK = 64
BOOTSTRAP_CELLS = 4_000_000


def _validate(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise MetricsError("labels and scores differ in shape")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise MetricsError("metrics need both members (label 1) and non-members (label 0)")
    if not np.all(np.isfinite(scores)):
        bad = int((~np.isfinite(scores)).sum())
        raise MetricsError(f"{bad} scores are NaN or infinite")
    return labels.astype(int), scores


class _Ranked:
    """Members' and non-members' scores mapped to the index of their distinct value, highest first."""

    def __init__(self, pos: np.ndarray, neg: np.ndarray):
        values, inv = np.unique(np.r_[pos, neg], return_inverse=True)
        k = len(values)
        inv = (k - 1) - inv.ravel()  # 0 = the highest score
        self.k, self.m, self.n = k, len(pos), len(neg)
        self.pos_idx, self.neg_idx = inv[: len(pos)], inv[len(pos):]

    @property
    def distinct(self) -> bool:
        """Every score a value of its own (no ties): then each value's count is its one text's weight."""
        return self.k == self.m + self.n

    def weighted(self, weights: np.ndarray, which: np.ndarray) -> np.ndarray:
        """[B, K] counts per distinct value from [B, size] per-text weights (no ties: a scatter, not a bincount)."""
        out = np.zeros((weights.shape[0], self.k), dtype=np.int32)
        out[:, which] = weights
        return out

    def counts(self, draws: np.ndarray, which: np.ndarray) -> np.ndarray:
        """[B, K] counts per distinct value of B weightings given as [B, size] draws of indices into ``which``."""
        b = draws.shape[0]
        flat = which[draws] + (np.arange(b, dtype=np.int64) * self.k)[:, None]
        return np.bincount(flat.ravel(), minlength=b * self.k).reshape(b, self.k).astype(np.int32)

    def identity(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.bincount(self.pos_idx, minlength=self.k)[None].astype(np.int32),
                np.bincount(self.neg_idx, minlength=self.k)[None].astype(np.int32))


def _auc_tpr(cp: np.ndarray, cn: np.ndarray, m: int, n: int, fprs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """AUC [B] and TPR at each FPR [B, len(fprs)] of B weightings: ``cp``/``cn`` [B, K] are the counts of
    members / non-members per distinct score, highest score first.

    AUC (Mann–Whitney, ties one half) = sum over values v of cn[v] * (members above v + cp[v] / 2) / (m n).
    ROC vertices after value k: FP_k = cumsum(cn)[k] / n, TP_k = cumsum(cp)[k] / m, from (0, 0)."""
    # int32 is exact: a count or cumulative count never exceeds the number of texts
    tp = np.cumsum(cp, axis=1, dtype=np.int32)
    fp = np.cumsum(cn, axis=1, dtype=np.int32)
    # members strictly above a value: tp - cp, so the sum is cn . (2 tp - cp), without [B, K] temporaries
    # (exact: integer products and sums below 2^53)
    auc = (2 * np.einsum("ij,ij->i", cn, tp, dtype=np.float64) - np.einsum("ij,ij->i", cn, cp, dtype=np.float64)) / (2.0 * m * n)
    b, k = tp.shape
    tpr = np.empty((b, len(fprs)))
    rows = np.arange(b)
    for j, f in enumerate(fprs):
        # vertices 0..K: vertex 0 is (0, 0), vertex i >= 1 is after value i-1. The last vertex with
        # FP <= f n (at a vertical step the best TPR), then linear interpolation towards the next one.
        # Rows of fp are non-decreasing: a binary search per row finds how many vertices have FP <= f n.
        lim = f * n
        last = np.fromiter((np.searchsorted(row, lim + 1e-9 * n, side="right") for row in fp), dtype=np.int64, count=b)
        fp_a = np.where(last > 0, fp[rows, np.maximum(last - 1, 0)], 0)
        tp_a = np.where(last > 0, tp[rows, np.maximum(last - 1, 0)], 0)
        nxt = np.minimum(last, k - 1)
        fp_b, tp_b = fp[rows, nxt], tp[rows, nxt]
        gap = fp_b - fp_a
        frac = np.clip(np.where(gap > 0, (lim - fp_a) / np.where(gap > 0, gap, 1), 0.0), 0.0, 1.0)
        tpr[:, j] = (tp_a + frac * (tp_b - tp_a)) / m
    return auc, tpr


def bootstrap_arrays(pos: np.ndarray, neg: np.ndarray, pos_draws: np.ndarray, neg_draws: np.ndarray,
                     fprs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """AUC [B] and TPR@FPR [B, len(fprs)] of B given resamples (``pos_draws`` [B, m], ``neg_draws`` [B, n]:
    indices into ``pos`` / ``neg``), all at once. Exposed so tests can check each resample against
    scikit-learn on the very same draws."""
    r = _Ranked(np.asarray(pos, np.float64), np.asarray(neg, np.float64))
    pos_draws, neg_draws = np.asarray(pos_draws), np.asarray(neg_draws)
    cp, cn = _resample_counts(r, pos_draws, neg_draws, _row_weights(pos_draws, r.m), _row_weights(neg_draws, r.n))
    return _auc_tpr(cp, cn, r.m, r.n, tuple(fprs))


def _resample_counts(r: _Ranked, pos_draws: np.ndarray, neg_draws: np.ndarray, pos_weights: np.ndarray,
                     neg_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, K] member and non-member counts per distinct value of B resamples: without ties a scatter of the
    per-text weights (shared by every attack of the same texts), with ties a bincount of the draws."""
    if r.distinct:
        return r.weighted(pos_weights, r.pos_idx), r.weighted(neg_weights, r.neg_idx)
    return r.counts(pos_draws, r.pos_idx), r.counts(neg_draws, r.neg_idx)


def auc_score_interval(auc: float, m: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Score-type interval for an AUC from m members and n non-members: the θ with
    (θ − AUC)² ≤ z² V(θ), V the Hanley–McNeil variance with Q1 = θ/(2−θ), Q2 = 2θ²/(1+θ)
    (Newcombe 2006). Unlike a Wald or bootstrap interval it does not collapse at AUC 0 or 1."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    z2 = norm.ppf((1 + ci) / 2) ** 2

    def c(t: float) -> float:  # V(t) = t (1 - t) c(t)
        return (1 + (m - 1) * (1 - t) / (2 - t) + (n - 1) * t / (1 + t)) / (m * n)

    def g(t: float) -> float:
        return (t - auc) ** 2 - z2 * t * (1 - t) * c(t)

    # At AUC 1 (0) the root t = 1 (0) is trivial: divide it out, (1 - t) = z² t c(t), to find the other one.
    if auc >= 1:
        return float(brentq(lambda t: (1 - t) - z2 * t * c(t), 0.0, 1.0)), 1.0
    if auc <= 0:
        return 0.0, float(brentq(lambda t: t - z2 * (1 - t) * c(t), 0.0, 1.0))
    lo = 0.0 if g(0.0) <= 0 else brentq(g, 0.0, auc)
    hi = 1.0 if g(1.0) <= 0 else brentq(g, auc, 1.0)
    return float(lo), float(hi)


def clopper_pearson(k: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial proportion k/n (beta quantiles)."""
    from scipy.stats import beta

    a = (1 - ci) / 2
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float | None:
    labels, scores = _validate(labels, scores)
    n_neg = int((labels == 0).sum())
    if fpr < 1.0 / n_neg:
        return None
    r = _Ranked(scores[labels == 1], scores[labels == 0])
    cp, cn = r.identity()
    return float(_auc_tpr(cp, cn, r.m, r.n, (float(fpr),))[1][0, 0])


@dataclass
class AttackMetrics:
    auc: float
    auc_ci: tuple[float, float] | None
    tpr: dict[str, float | None]  # "0.1%" -> value
    tpr_ci: dict[str, tuple[float, float] | None]
    n_members: int
    n_nonmembers: int
    notes: list[str] = field(default_factory=list)
    # how each interval was made: {"auc": ..., "tpr_at_fpr": {"1%": ...}} (CI_* constants); {} without intervals
    ci_method: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc, "auc_ci95": self.auc_ci, "tpr_at_fpr": self.tpr, "tpr_at_fpr_ci95": self.tpr_ci,
            "n_members": self.n_members, "n_nonmembers": self.n_nonmembers, "notes": self.notes, "ci_method": self.ci_method,
        }


def auc(labels, scores) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U, ties counted half), no validation:
    for inner loops such as tuning RMIA's offline a, where ``evaluate`` would do far more."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    r = rankdata(np.asarray(scores, dtype=np.float64))
    m = int(y.sum())
    n = y.size - m
    return float((r[y].sum() - m * (m + 1) / 2) / (m * n))


def fpr_label(f: float) -> str:
    return f"{f * 100:g}%"


def evaluate(labels, scores, fprs=DEFAULT_FPRS, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95,
             chunk: int = BOOTSTRAP_CHUNK) -> AttackMetrics:
    """AUC and TPR@FPR with bootstrap intervals (members and non-members resampled separately, so
    every resample keeps both classes), replaced where the bootstrap collapses (module docstring)."""
    return evaluate_many(labels, {"scores": scores}, fprs, n_bootstrap, seed, ci, chunk)["scores"]


def _row_weights(draws: np.ndarray, size: int) -> np.ndarray:
    """[B, size] how often each text is drawn in each of B resamples ([B, size] draws of indices)."""
    b = draws.shape[0]
    flat = draws + (np.arange(b, dtype=np.int64) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=b * size).reshape(b, size).astype(np.int32)


def evaluate_many(labels, scores: dict[str, Any], fprs=DEFAULT_FPRS, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95,
                  chunk: int = BOOTSTRAP_CHUNK, pool: Any = None) -> dict[str, AttackMetrics]:
    """:func:`evaluate` of several score columns of the same texts (e.g. every attack of an audit), with
    the same resamples drawn once for all of them: each column gets exactly what ``evaluate`` alone gives
    it (the draws depend on the seed and the labels only). ``pool``: a concurrent.futures executor to run
    the columns of each chunk of resamples on (numpy releases the GIL in the array work)."""
    if not scores:
        return {}
    checked = {name: _validate(labels, s) for name, s in scores.items()}
    ranked = {name: _Ranked(s[y == 1], s[y == 0]) for name, (y, s) in checked.items()}
    any_r = next(iter(ranked.values()))
    m, n = any_r.m, any_r.n
    keys = [fpr_label(f) for f in fprs]
    ok = [f >= 1.0 / n for f in fprs]
    used = tuple(float(f) for f, o in zip(fprs, ok) if o)
    points = {}
    for name, r in ranked.items():
        cp, cn = r.identity()
        points[name] = _auc_tpr(cp, cn, m, n, used)
    aucs = {name: np.empty(max(n_bootstrap, 0)) for name in ranked}
    tprs = {name: np.empty((max(n_bootstrap, 0), len(used))) for name in ranked}
    if n_bootstrap > 0:
        # members and non-members from their own streams, one call per resample: the chunk size cannot change the draws
        rng_p, rng_n = (np.random.default_rng(x) for x in np.random.SeedSequence(seed).spawn(2))
        step = max(1, min(chunk, BOOTSTRAP_CELLS // max(r.k for r in ranked.values())))

        def one(name: str, lo: int, pd_: np.ndarray, nd_: np.ndarray, wp: np.ndarray, wn: np.ndarray) -> None:
            cp, cn = _resample_counts(ranked[name], pd_, nd_, wp, wn)
            aucs[name][lo:lo + len(pd_)], tprs[name][lo:lo + len(pd_)] = _auc_tpr(cp, cn, m, n, used)

        for lo in range(0, n_bootstrap, step):
            b = min(step, n_bootstrap - lo)
            pd_ = np.stack([rng_p.integers(0, m, m) for _ in range(b)])
            nd_ = np.stack([rng_n.integers(0, n, n) for _ in range(b)])
            wp, wn = _row_weights(pd_, m), _row_weights(nd_, n)  # shared by every column
            if pool is None:
                for name in ranked:
                    one(name, lo, pd_, nd_, wp, wn)
            else:
                for f in [pool.submit(one, name, lo, pd_, nd_, wp, wn) for name in ranked]:
                    f.result()
    return {name: _metrics(points[name], aucs[name], tprs[name], m, n, keys, ok, ci, n_bootstrap) for name in ranked}


def _metrics(point, aucs: np.ndarray, tprs: np.ndarray, m: int, n: int, keys: list[str], ok: list[bool], ci: float,
             n_bootstrap: int) -> AttackMetrics:
    """AttackMetrics from the point estimates and the resamples' values (intervals as the module docstring says)."""
    auc_a, tpr_a = point
    auc = float(auc_a[0])
    it = iter(tpr_a[0].tolist())
    tpr = {k: (next(it) if o else None) for k, o in zip(keys, ok)}
    notes = [f"TPR at {k} FPR not reported: {n} non-members resolve FPRs down to {100 / n:.2g}% only"
             for k, o in zip(keys, ok) if not o]
    auc_ci = None
    tpr_ci: dict[str, tuple[float, float] | None] = {k: None for k in keys}
    method: dict[str, Any] = {}
    if n_bootstrap > 0:
        lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
        auc_ci = (float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi)))
        method["auc"] = CI_BOOTSTRAP
        if auc_ci[0] == auc_ci[1]:
            auc_ci, method["auc"] = auc_score_interval(auc, m, n, ci), CI_AUC_SCORE
        method["tpr_at_fpr"] = {}
        j = 0
        for k, o in zip(keys, ok):
            if not o:
                continue
            iv = (float(np.percentile(tprs[:, j], lo)), float(np.percentile(tprs[:, j], hi)))
            how = CI_BOOTSTRAP
            if iv[0] == iv[1]:
                iv, how = clopper_pearson(tpr[k] * m, m, ci), CI_CLOPPER_PEARSON
            tpr_ci[k], method["tpr_at_fpr"][k] = iv, how
            j += 1
    return AttackMetrics(auc, auc_ci, tpr, tpr_ci, m, n, notes, method)


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    labels, scores = _validate(labels, scores)
    f, t, _ = roc_curve(labels, scores)
    return f, t
