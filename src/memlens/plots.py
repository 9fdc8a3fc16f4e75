"""Plots with matplotlib (headless Agg backend): log-log ROC curves, score histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC (log-log)") -> Path:
    """One ROC curve per attack on log-log axes, where low-FPR behaviour is visible."""
    from sklearn.metrics import auc as _auc

    from memlens.metrics import roc

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = 1.0
    for name, (labels, scores) in curves.items():
        scores = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(scores)
        if bad.any():  # as in the metrics: texts without a finite score rank as the least likely members
            scores = np.where(bad, (scores[~bad].min() - 1) if (~bad).any() else 0.0, scores)
        f, t = roc(labels, scores)
        n_neg = int((np.asarray(labels) == 0).sum())
        floor = min(floor, 1.0 / max(n_neg, 1))
        ax.plot(np.maximum(f, 1e-5), np.maximum(t, 1e-5), label=f"{name} (AUC {_auc(f, t):.3f})", drawstyle="steps-post")
    grid = np.logspace(-5, 0, 100)
    ax.plot(grid, grid, "k:", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(max(floor / 2, 1e-5), 1)
    ax.set_ylim(max(floor / 2, 1e-5), 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
