"""Time of metrics.evaluate at audit size: 20,000 texts (half members) × 8 attacks × 1,000 bootstrap
resamples, before (the scikit-learn loop: one roc_auc_score + roc_curve per resample, kept in
tests/metrics_reference.py) and after (the vectorized counting in memlens.metrics), and the
largest difference in point estimates between the two.

Scores are drawn on a coarse grid for half the attacks (ties, as loss-like scores of short texts
have) and continuous for the rest.

    python benchmarks/metrics_speed.py [--texts 20000] [--attacks 8] [--bootstrap 1000] [--skip-before] [--before-bootstrap 100]

``--before-bootstrap B`` times the scikit-learn loop on B resamples only and scales its time
linearly to ``--bootstrap`` (the loop's cost is per resample), printed as such.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from metrics_reference import sklearn_evaluate

from memlens.metrics import DEFAULT_FPRS, evaluate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=20_000)
    ap.add_argument("--attacks", type=int, default=8)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--skip-before", action="store_true", help="time only the vectorized path")
    ap.add_argument("--before-bootstrap", type=int, help="resamples for the scikit-learn loop (time scaled to --bootstrap)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(a.texts // 2, int), np.zeros(a.texts - a.texts // 2, int)]
    data = []
    for j in range(a.attacks):
        s = rng.normal(size=a.texts) + (0.1 + 0.1 * j) * labels
        data.append(np.round(s, 2) if j % 2 else s)
    # CPU time of this process as well as wall time: on a shared machine the wall time follows the load
    t0, c0 = time.perf_counter(), time.process_time()
    after = [evaluate(labels, s, fprs=DEFAULT_FPRS, n_bootstrap=a.bootstrap, seed=0) for s in data]
    t_after, c_after = time.perf_counter() - t0, time.process_time() - c0
    print(f"{a.texts} texts x {a.attacks} attacks x {a.bootstrap} resamples")
    print(f"after  (vectorized counting): {t_after:.2f} s wall, {c_after:.2f} s CPU ({t_after / a.attacks:.2f} s wall per attack)")
    if not a.skip_before:
        nb = a.before_bootstrap or a.bootstrap
        t0, c0 = time.perf_counter(), time.process_time()
        before = [sklearn_evaluate(labels, s, DEFAULT_FPRS, n_bootstrap=nb, seed=0) for s in data]
        t_before = (time.perf_counter() - t0) * a.bootstrap / nb
        c_before = (time.process_time() - c0) * a.bootstrap / nb
        how = "" if nb == a.bootstrap else f", measured on {nb} resamples and scaled to {a.bootstrap}"
        print(f"before (scikit-learn per resample): {t_before:.2f} s wall, {c_before:.2f} s CPU ({t_before / a.attacks:.2f} s wall "
              f"per attack{how}); speed-up {t_before / t_after:.1f}x wall, {c_before / c_after:.1f}x CPU")
        d_auc = max(abs(x.auc - y["auc"]) for x, y in zip(after, before))
        d_tpr = max(abs(x.tpr[k] - v) for x, y in zip(after, before) for k, v in zip(x.tpr, y["tpr"]) if v is not None)
        w = [(x.auc_ci[1] - x.auc_ci[0], y["auc_ci"][1] - y["auc_ci"][0]) for x, y in zip(after, before)]
        print(f"point estimates: max |AUC diff| {d_auc:.2e}, max |TPR diff| {d_tpr:.2e}; AUC 95% interval widths "
              f"after/before (different draws): " + ", ".join(f"{p:.4f}/{q:.4f}" for p, q in w[:3]) + " ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
