"""The scikit-learn bootstrap that memlens.metrics.evaluate used before it was vectorized: one
``roc_auc_score`` and one ``roc_curve`` per resample. Kept only as a reference for the tests and
for benchmarks/metrics_speed.py; not part of the package."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def sklearn_point(labels, scores, fprs):
    """AUC and TPR at each FPR (np.interp over roc_curve; None below 1/n_nonmembers)."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    n_neg = int((labels == 0).sum())
    f, t, _ = roc_curve(labels, scores)
    return float(roc_auc_score(labels, scores)), [None if x < 1.0 / n_neg else float(np.interp(x, f, t)) for x in fprs]


def sklearn_resamples(pos, neg, pos_draws, neg_draws, fprs):
    """AUC [B] and TPR [B, len(fprs)] of the given resamples, one scikit-learn call each."""
    y = np.r_[np.ones(pos_draws.shape[1], int), np.zeros(neg_draws.shape[1], int)]
    aucs, tprs = [], []
    for pd_, nd_ in zip(pos_draws, neg_draws):
        s = np.r_[pos[pd_], neg[nd_]]
        aucs.append(roc_auc_score(y, s))
        f, t, _ = roc_curve(y, s)
        tprs.append([np.interp(x, f, t) for x in fprs])
    return np.array(aucs), np.array(tprs)


def sklearn_evaluate(labels, scores, fprs, n_bootstrap=1000, seed=0, ci=0.95):
    """The old evaluate(): point estimates and percentile intervals, the loop of scikit-learn calls."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    auc, tpr = sklearn_point(labels, scores, fprs)
    use = [f for f, v in zip(fprs, tpr) if v is not None]
    rng = np.random.default_rng(seed)
    pd_ = np.stack([rng.integers(0, len(pos), len(pos)) for _ in range(n_bootstrap)])
    nd_ = np.stack([rng.integers(0, len(neg), len(neg)) for _ in range(n_bootstrap)])
    aucs, tprs = sklearn_resamples(pos, neg, pd_, nd_, use)
    lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
    return {"auc": auc, "tpr": tpr, "auc_ci": (np.percentile(aucs, lo), np.percentile(aucs, hi)),
            "tpr_ci": [(np.percentile(tprs[:, j], lo), np.percentile(tprs[:, j], hi)) for j in range(len(use))]}
