"""Honest evaluation: ROC AUC, TPR at fixed FPR, bootstrap intervals, ROC curves.

TPR at FPR f is read off the ROC curve by linear interpolation between its vertices (as
``np.interp`` over scikit-learn's ``roc_curve``). With n non-members the smallest FPR the data can
resolve is 1/n, so a TPR at f < 1/n is refused (reported as None with a note), never printed as
a meaningless number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from memlens.errors import MetricsError  # noqa: F401  (re-exported: its old home)

DEFAULT_FPRS = (0.001, 0.01, 0.05)


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


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float | None:
    labels, scores = _validate(labels, scores)
    n_neg = int((labels == 0).sum())
    if fpr < 1.0 / n_neg:
        return None
    f, t, _ = roc_curve(labels, scores)
    return float(np.interp(fpr, f, t))


@dataclass
class AttackMetrics:
    auc: float
    auc_ci: tuple[float, float] | None
    tpr: dict[str, float | None]  # "0.1%" -> value
    tpr_ci: dict[str, tuple[float, float] | None]
    n_members: int
    n_nonmembers: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc, "auc_ci95": self.auc_ci, "tpr_at_fpr": self.tpr, "tpr_at_fpr_ci95": self.tpr_ci,
            "n_members": self.n_members, "n_nonmembers": self.n_nonmembers, "notes": self.notes,
        }


def fpr_label(f: float) -> str:
    return f"{f * 100:g}%"


def evaluate(labels, scores, fprs=DEFAULT_FPRS, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95) -> AttackMetrics:
    """AUC and TPR@FPR with percentile bootstrap intervals (resampling members and non-members
    separately, so every resample keeps both classes)."""
    labels, scores = _validate(labels, scores)
    pos, neg = scores[labels == 1], scores[labels == 0]
    auc = float(roc_auc_score(labels, scores))
    tpr = {fpr_label(f): tpr_at_fpr(labels, scores, f) for f in fprs}
    notes = [f"TPR at {fpr_label(f)} FPR not reported: {len(neg)} non-members resolve FPRs down to {fpr_label(1 / len(neg))} only"
             for f in fprs if tpr[fpr_label(f)] is None]
    auc_ci = None
    tpr_ci: dict[str, tuple[float, float] | None] = {k: None for k in tpr}
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        aucs, tprs = [], {k: [] for k in tpr if tpr[k] is not None}
        y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
        for _ in range(n_bootstrap):
            s = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
            aucs.append(roc_auc_score(y, s))
            if tprs:
                f_, t_, _ = roc_curve(y, s)
                for f in fprs:
                    if fpr_label(f) in tprs:
                        tprs[fpr_label(f)].append(np.interp(f, f_, t_))
        lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
        auc_ci = (float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi)))
        for k, v in tprs.items():
            tpr_ci[k] = (float(np.percentile(v, lo)), float(np.percentile(v, hi)))
    return AttackMetrics(auc, auc_ci, tpr, tpr_ci, len(pos), len(neg), notes)


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _validate(labels, scores)
    f, t, _ = roc_curve(labels, scores)
    return f, t
