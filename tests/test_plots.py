"""The one ROC figure (memlens.plots): roc.png and the report's ROC image."""
from __future__ import annotations

import numpy as np

from memlens.plots import plot_roc, roc_figure


def test_roc_figure_labels_curves_with_the_given_aucs_and_ranks_missing_scores_last(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(40, int), np.zeros(60, int)]
    good = rng.normal(size=100) + labels
    holes = good.copy()
    holes[:5] = np.nan  # members without a score: the least likely members, as in the metrics
    fig = roc_figure({"good": (labels, good), "holes": (labels, holes)}, aucs={"good": 0.777, "holes": None})
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "good (0.777)" and legend[1].startswith("holes (0.")  # its own curve's area when not given
    floor = 0.5 / 40  # half the smaller class's resolution
    assert ax.get_xlim()[0] == floor and all(np.min(line.get_xdata()) >= floor for line in ax.get_lines())
    assert "40 members, 60 non-members" in ax.get_title()
    out = plot_roc({"good": (labels, good)}, tmp_path / "roc.png", aucs={"good": 0.777})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert roc_figure({}).axes[0].get_xlim()[0] == 0.01  # no curve: empty axes, no error
