"""False-positive rate and power of set-level inference (memlens.setinfer) on synthetic scores.

False positives: a large pool of scores of texts that are all unseen (3 correlated attacks, no
shift) is split at random into a "suspect" and an "unseen" set, --splits times per set size; the
printed rate of p < alpha should be about alpha (binomial standard error sqrt(alpha(1-alpha)/splits):
0.015 at alpha 0.05 with 200 splits). Both methods are measured: "split" (Maini et al.'s half
split, parametric p) and "crossfit" (all texts tested, permutation p; fewer splits, it is slower).

Power: suspect scores shifted by d = 0.358 (each single attack's AUC about 0.6); the p-value curve
of the three attacks combined and of each attack alone through the same procedure (half the texts
fit the aggregator, half are tested), and of each attack tested directly (its orientation is known,
so no fitting: a one-sided Welch test on all the texts), median p over --draws draws per size, and
the smallest size from which the median p stays < 0.01.

    python benchmarks/setinfer_fpr.py [--splits 200] [--sizes 10 50 200] [--crossfit-splits 40] [--permutations 39] [--draws 20]
        [--n 1000] [--shift 0.358] [--shared 0.6] [--skip-fpr]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from memlens.setinfer import (
    default_sizes,
    false_positive_rate,
    pvalue_curve,
    synthetic_scores,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--crossfit-splits", type=int, default=40)
    ap.add_argument("--permutations", type=int, default=39)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--shift", type=float, default=0.358)
    ap.add_argument("--shared", type=float, default=0.6, help="share of each attack's sd common to all attacks")
    ap.add_argument("--n", type=int, default=1000, help="texts per set for the power curves")
    ap.add_argument("--skip-fpr", action="store_true")
    args = ap.parse_args()

    if not args.skip_fpr:
        false_positives(args)
    power(args)


def false_positives(args) -> None:
    pool = synthetic_scores(4000, shared=args.shared, seed=1)
    se = np.sqrt(args.alpha * (1 - args.alpha) / args.splits)
    print(f"false-positive rate at alpha {args.alpha} (unseen vs unseen, {args.splits} random splits; binomial SE {se:.3f})")
    for test in ("welch", "mannwhitney"):
        for size in args.sizes:
            t = time.perf_counter()
            fpr, ps = false_positive_rate(pool, n_splits=args.splits, size=size, alpha=args.alpha, test=test, method="split")
            print(f"  split    {test:11s} n={size:4d}+{size:<4d} FPR {fpr:.3f}  (p<0.01: {(ps < 0.01).mean():.3f})  "
                  f"{time.perf_counter() - t:.1f}s")
    for size in args.sizes[1:2]:
        t = time.perf_counter()
        fpr, _ = false_positive_rate(pool, n_splits=args.crossfit_splits, size=size, alpha=args.alpha, test="welch", method="crossfit",
                                     n_permutations=args.permutations)
        print(f"  crossfit welch       n={size:4d}+{size:<4d} FPR {fpr:.3f}  "
              f"({args.crossfit_splits} splits, {args.permutations} permutations) "
              f"{time.perf_counter() - t:.1f}s")



def power(args) -> None:
    n = args.n
    suspect, unseen = synthetic_scores(n, args.shift, shared=args.shared, seed=2), synthetic_scores(n, shared=args.shared, seed=3)
    y = np.r_[np.ones(n), np.zeros(n)]
    aucs = {a: roc_auc_score(y, np.r_[suspect[a], unseen[a]]) for a in suspect.columns}
    print(f"\npower: shift {args.shift}, single-attack AUCs " + ", ".join(f"{a} {v:.3f}" for a, v in aucs.items()))
    for name, cols in [("combined", list(suspect.columns))] + [(a, [a]) for a in suspect.columns]:
        c = pvalue_curve(suspect, unseen, cols, draws=args.draws, alpha=0.01)
        curve = "  ".join(f"{int(r.size)}:{r.median_p:.2g}" for r in c.table.itertuples())
        print(f"  {name:9s} texts needed for median p < 0.01: {c.n_needed}   (size:median p  {curve})")
    rng = np.random.default_rng(0)
    for a in suspect.columns:
        med = {}
        for size in default_sizes(n):
            ps = [stats.ttest_ind(rng.choice(suspect[a], size, replace=False), rng.choice(unseen[a], size, replace=False),
                                  equal_var=False, alternative="greater").pvalue for _ in range(args.draws)]
            med[size] = float(np.median(ps))
        sizes = list(med)
        needed = next((s for i, s in enumerate(sizes) if all(med[t] < 0.01 for t in sizes[i:])), None)
        curve = "  ".join(f"{s}:{p:.2g}" for s, p in med.items())
        print(f"  {a} direct, all texts: texts needed for median p < 0.01: {needed}   (size:median p  {curve})")


if __name__ == "__main__":
    main()
