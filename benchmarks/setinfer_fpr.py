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
        [--n 1000] [--shift 0.358] [--shared 0.6] [--skew 0.75] [--skip-fpr] [--out results.json]

--skew S makes every score heavy-tailed by the increasing map x -> -exp(-S x) (a mirrored log-normal:
a few texts score far below the rest, as the loss of badly predicted texts does; S = 0.75 gives
skewness about -3). The map is monotone, so each attack's AUC and every rank test are unchanged:
only tests that use the values themselves (Welch) see the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# Tiny fits: BLAS threads only add contention on a shared box (L-BFGS-B ran 10x slower). Set before numpy loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from memlens.setinfer import (  # noqa: E402
    default_sizes,
    false_positive_rate,
    pvalue_curve,
    synthetic_scores,
)

RESULTS: dict = {}


def scores(n: int, shift: float = 0.0, *, shared: float, seed: int, skew: float):
    df = synthetic_scores(n, shift, shared=shared, seed=seed)
    return df if skew == 0 else -np.exp(-skew * df)


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
    ap.add_argument("--skew", type=float, default=0.0, help="heavy-tailed scores: x -> -exp(-skew x) (0: normal scores)")
    ap.add_argument("--skip-fpr", action="store_true")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = ap.parse_args()
    RESULTS["settings"] = vars(args) | {"out": str(args.out)}
    RESULTS["skewness"] = float(stats.skew(scores(20000, shared=args.shared, seed=9, skew=args.skew)["attack0"]))
    print(f"score skewness {RESULTS['skewness']:.2f}")

    if not args.skip_fpr:
        false_positives(args)
    power(args)
    if args.out:
        args.out.write_text(json.dumps(RESULTS, indent=1) + "\n")


def false_positives(args) -> None:
    pool = scores(4000, shared=args.shared, seed=1, skew=args.skew)
    fp = RESULTS.setdefault("false_positives", {})
    se = np.sqrt(args.alpha * (1 - args.alpha) / args.splits)
    print(f"false-positive rate at alpha {args.alpha} (unseen vs unseen, {args.splits} random splits; binomial SE {se:.3f})")
    for test in ("welch", "mannwhitney"):
        for size in args.sizes:
            t = time.perf_counter()
            fpr, ps = false_positive_rate(pool, n_splits=args.splits, size=size, alpha=args.alpha, test=test, method="split")
            fp[f"split/{test}/{size}"] = {"fpr": fpr, "rate_p_below_0.01": float((ps < 0.01).mean()), "splits": args.splits}
            print(f"  split    {test:11s} n={size:4d}+{size:<4d} FPR {fpr:.3f}  (p<0.01: {(ps < 0.01).mean():.3f})  "
                  f"{time.perf_counter() - t:.1f}s")
    for test in ("welch", "mannwhitney") if args.crossfit_splits else ():
        for size in args.sizes[1:2]:
            t = time.perf_counter()
            fpr, ps = false_positive_rate(pool, n_splits=args.crossfit_splits, size=size, alpha=args.alpha, test=test, method="crossfit",
                                          n_permutations=args.permutations)
            fp[f"crossfit/{test}/{size}"] = {"fpr": fpr, "splits": args.crossfit_splits, "permutations": args.permutations}
            print(f"  crossfit {test:11s} n={size:4d}+{size:<4d} FPR {fpr:.3f}  "
                  f"({args.crossfit_splits} splits, {args.permutations} permutations) "
                  f"{time.perf_counter() - t:.1f}s")


def power(args) -> None:
    n = args.n
    suspect = scores(n, args.shift, shared=args.shared, seed=2, skew=args.skew)
    unseen = scores(n, shared=args.shared, seed=3, skew=args.skew)
    pw = RESULTS.setdefault("power", {})
    y = np.r_[np.ones(n), np.zeros(n)]
    aucs = {a: roc_auc_score(y, np.r_[suspect[a], unseen[a]]) for a in suspect.columns}
    print(f"\npower: shift {args.shift}, single-attack AUCs " + ", ".join(f"{a} {v:.3f}" for a, v in aucs.items()))
    for test in ("welch", "mannwhitney"):
        for name, cols in [("combined", list(suspect.columns))] + [(a, [a]) for a in suspect.columns]:
            c = pvalue_curve(suspect, unseen, cols, draws=args.draws, alpha=0.01, test=test)
            curve = "  ".join(f"{int(r.size)}:{r.median_p:.2g}" for r in c.table.itertuples())
            pw[f"split/{name}/{test}"] = c.to_dict()
            print(f"  {test:11s} {name:9s} texts needed for median p < 0.01: {c.n_needed}   (size:median p  {curve})")
        rng = np.random.default_rng(0)
        for a in suspect.columns:
            med = {}
            for size in default_sizes(n):
                pairs = [(rng.choice(suspect[a], size, replace=False), rng.choice(unseen[a], size, replace=False))
                         for _ in range(args.draws)]
                ps = [stats.ttest_ind(s, u, equal_var=False, alternative="greater").pvalue if test == "welch"
                      else stats.mannwhitneyu(s, u, alternative="greater").pvalue for s, u in pairs]
                med[size] = float(np.median(ps))
            sizes = list(med)
            needed = next((s for i, s in enumerate(sizes) if all(med[t] < 0.01 for t in sizes[i:])), None)
            curve = "  ".join(f"{s}:{p:.2g}" for s, p in med.items())
            pw[f"direct/{a}/{test}"] = {"n_needed": needed, "median_p": med}
            print(f"  {test:11s} {a} direct, all texts: texts needed for median p < 0.01: {needed}   (size:median p  {curve})")


if __name__ == "__main__":
    main()
