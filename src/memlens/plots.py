"""Plots with matplotlib (headless Agg backend): log-log ROC curves, score histograms."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aucs: Mapping[str, float | None] | None = None,
               title: str | None = None, size: tuple[float, float] = (5.2, 4.6)):
    """One ROC curve per attack (``curves``: name -> (labels, scores)) on log-log axes, where low-FPR
    behaviour is visible, as a matplotlib Figure (object API: no pyplot state, so it can be drawn on any
    thread). Texts without a finite score rank as the least likely members, as in the metrics; ``aucs``
    label the curves (the audit's AUCs), else each curve's own area. The axes start at half the smaller
    class's resolution, the lowest rate either can show. The report (memlens.report) and roc.png draw this."""
    from matplotlib.figure import Figure
    from sklearn.metrics import auc as curve_auc

    from memlens.metrics import roc

    fig = Figure(figsize=size)
    ax = fig.subplots()
    floor, n_pos, n_neg = 1.0, 0, 0
    for name, (labels, scores) in curves.items():
        labels = np.asarray(labels)
        scores = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(scores)
        if bad.any():
            scores = np.where(bad, (scores[~bad].min() - 1) if (~bad).any() else 0.0, scores)
        f, t = roc(labels, scores)
        n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
        floor = min(floor, 0.5 / max(min(n_neg, n_pos), 1))
        value = (aucs or {}).get(name)
        value = curve_auc(f, t) if value is None else value
        ax.plot(np.maximum(f, floor), np.maximum(t, floor), lw=1.3, label=f"{name} ({value:.3f})")
    floor = floor if curves else 0.01  # nothing to draw: still a valid pair of axes
    grid = np.logspace(np.log10(floor), 0, 50)
    ax.plot(grid, grid, "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05), xlabel="false positive rate",
           ylabel="true positive rate", title=title or f"ROC, log-log ({n_pos} members, {n_neg} non-members)")
    ax.title.set_fontsize(10)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    fixed_margins(fig, left=0.7, right=0.15, top=0.35, bottom=0.5)
    return fig


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, aucs: Mapping[str, float | None] | None = None,
             title: str | None = None) -> Path:
    """:func:`roc_figure` saved as a PNG at ``path`` (the audit's roc.png)."""
    path = Path(path)
    roc_figure(curves, aucs, title).savefig(path, dpi=120)
    return path


def fixed_margins(fig, *, left: float, right: float, top: float, bottom: float, between_x: float = 0.0, between_y: float = 0.0) -> None:
    """Fixed margins and gaps, in inches, for the labels and titles of a figure's grid of axes: what tight_layout
    would find for these figures, without measuring every tick label's extent (0.6 s of a report's 4 s at
    20,000 texts)."""
    w, h = fig.get_size_inches()
    gs = fig.axes[0].get_subplotspec().get_gridspec() if fig.axes else None
    ncols, nrows = (gs.ncols, gs.nrows) if gs is not None else (1, 1)
    aw = (w - left - right - between_x * (ncols - 1)) / ncols  # one axes' width and height
    ah = (h - top - bottom - between_y * (nrows - 1)) / nrows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=between_x / aw if ncols > 1 else 0.2, hspace=between_y / ah if nrows > 1 else 0.2)
