"""Set inference (memlens.setinfer) against single attacks on the PII testbed's members of one tier.

Question (issue 16): how many texts does ``memlens setinfer`` need to call a testbed tier "trained
on" at p < 0.01, compared with the same one-sided test on any single attack's score?

Input: an audit's scores.csv with ``label``, ``tier`` and one column per attack (the default
``memlens demo`` writes one: 48 members per tier, 144 non-members). Protocol, per set size n and
per draw (the same random subsets for every method in a draw, so the methods are compared paired):

* suspect set = n members of the tier drawn without replacement; unseen set = n non-members drawn
  without replacement. Members and non-members are different texts, so the two sets are disjoint.
  Every method sees these 2n texts and nothing else: the aggregator of set inference is fitted on
  a part of the same 2n texts (no extra non-members are lent to it).
* setinfer "split" (the library's default, Maini et al.): the aggregator (non-negative logistic
  regression on the standardized scores of a group of attacks) is fitted on a stratified half and
  the other half is tested (Welch and Mann-Whitney on the same held-out scores). Needs n >= 4.
* setinfer "crossfit": every text scored out of fold (2 folds), permutation p-value
  (--permutations label shuffles; smallest p 1/(permutations+1)). Slow: fewer draws and sizes.
* each single attack, "direct": its orientation is known (higher = member), so no fitting: the
  one-sided test on all 2n texts (Welch and Mann-Whitney). This is what a user with one attack
  would run and the fair baseline.
* each single attack through the split (the same procedure as setinfer with one attack; it tests
  half of the texts).

"texts needed" = the smallest n (per set) from which on the median p-value over the draws stays
below 0.01 at every larger size measured (memlens.setinfer.pvalue_curve's rule).

Also the false-positive rate on the real scores: the non-members are split at random into two
disjoint "unseen" sets of n texts (--fpr-splits times) and every method is run at alpha 0.05.

    python benchmarks/setinfer_testbed.py --scores OUT/scores.csv --tier 1 [--draws 50] [--sizes 2 3 4 ...]
        [--crossfit-draws 10] [--permutations 199] [--fpr-splits 200] [--out benchmarks/results/X.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

# Tiny fits: BLAS threads only add contention (10x slower L-BFGS-B on a loaded 2-core box). Set before numpy loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from memlens.setinfer import NON_ATTACK_COLUMNS, set_inference, split_scores  # noqa: E402

REFERENCE_FREE = ("loss", "zlib", "mink", "minkpp")  # attacks that need no reference model or population
TESTS = ("welch", "mannwhitney")


def one_sided(s: np.ndarray, u: np.ndarray, test: str) -> float:
    if np.ptp(np.r_[s, u]) == 0:
        return 1.0
    if test == "welch":
        return float(stats.ttest_ind(s, u, equal_var=False, alternative="greater").pvalue)
    return float(stats.mannwhitneyu(s, u, alternative="greater").pvalue)


def needed(sizes: list[int], medians: list[float], alpha: float = 0.01) -> int | None:
    for k, n in enumerate(sizes):
        if all(m < alpha for m in medians[k:]):
            return n
    return None


def summarize(sizes: list[int], pvals: dict[int, list[float]]) -> dict:
    rows, meds, used = [], [], []
    for n in sizes:
        if n not in pvals or not pvals[n]:
            continue
        p = np.asarray(pvals[n])
        rows.append({"size": n, "median_p": float(np.median(p)), "p25": float(np.percentile(p, 25)), "p75": float(np.percentile(p, 75)),
                     "detect_rate": float((p < 0.01).mean()), "draws": len(p)})
        meds.append(rows[-1]["median_p"])
        used.append(n)
    return {"n_needed": needed(used, meds), "curve": rows}


def power(xm: np.ndarray, xn: np.ndarray, attacks: list[str], groups: dict[str, list[str]], sizes: list[int], draws: int,
          cf_sizes: list[int], cf_draws: int, permutations: int, seed: int) -> dict:
    col = {a: k for k, a in enumerate(attacks)}
    res: dict[str, dict[int, list[float]]] = {}

    def add(key: str, n: int, p: float) -> None:
        res.setdefault(key, {}).setdefault(n, []).append(p)

    rng = np.random.default_rng(seed)
    for n in sizes:
        t = time.perf_counter()
        for d in range(draws):
            i = rng.choice(len(xm), n, replace=False)
            j = rng.choice(len(xn), n, replace=False)
            s, u = xm[i], xn[j]
            for a in attacks:
                for test in TESTS:
                    add(f"direct/{a}/{test}", n, one_sided(s[:, col[a]], u[:, col[a]], test))
            if n < 4:
                continue
            for g, names in groups.items():
                cols = [col[a] for a in names]
                hs, hu, _ = split_scores(s[:, cols], u[:, cols], seed=seed + d)
                for test in TESTS:
                    add(f"split/{g}/{test}", n, one_sided(hs, hu, test))
            for a in attacks:
                hs, hu, _ = split_scores(s[:, [col[a]]], u[:, [col[a]]], seed=seed + d)
                for test in TESTS:
                    add(f"split/{a}/{test}", n, one_sided(hs, hu, test))
            if n in cf_sizes and d < cf_draws:
                for g, names in groups.items():
                    cols = [col[a] for a in names]
                    for test in TESTS:
                        r = set_inference(s[:, cols], u[:, cols], names, method="crossfit", folds=2, n_permutations=permutations,
                                          test=test, seed=seed + d)
                        add(f"crossfit/{g}/{test}", n, r.p_value)
        print(f"  n={n:3d}: {time.perf_counter() - t:.1f}s", flush=True)
    return {key: summarize(sizes, v) for key, v in sorted(res.items())}


def false_positives(xn: np.ndarray, attacks: list[str], groups: dict[str, list[str]], sizes: list[int], splits: int, seed: int,
                    alpha: float = 0.05) -> dict:
    col = {a: k for k, a in enumerate(attacks)}
    out: dict[str, dict] = {}
    rng = np.random.default_rng(seed + 1000)
    for n in sizes:
        if 2 * n > len(xn):
            continue
        ps: dict[str, list[float]] = {}
        for k in range(splits):
            perm = rng.permutation(len(xn))
            s, u = xn[perm[:n]], xn[perm[n:2 * n]]
            for g, names in groups.items():
                cols = [col[a] for a in names]
                hs, hu, _ = split_scores(s[:, cols], u[:, cols], seed=seed + k)
                for test in TESTS:
                    ps.setdefault(f"split/{g}/{test}", []).append(one_sided(hs, hu, test))
            for a in attacks:
                for test in TESTS:
                    ps.setdefault(f"direct/{a}/{test}", []).append(one_sided(s[:, col[a]], u[:, col[a]], test))
        for key, p in ps.items():
            p = np.asarray(p)
            out.setdefault(key, {})[str(n)] = {"fpr_at_0.05": float((p < alpha).mean()), "rate_p_below_0.01": float((p < 0.01).mean()),
                                               "splits": len(p)}
    return out


def provenance() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"commit": commit, "machine": f"{cpu}, {len(os.sched_getaffinity(0))} CPUs usable ({platform.system()})",
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", required=True, help="an audit's scores.csv with label and tier columns")
    ap.add_argument("--tier", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--crossfit-sizes", type=int, nargs="*", default=[4, 5, 6, 8, 10, 12, 16, 24, 48])
    ap.add_argument("--crossfit-draws", type=int, default=10)
    ap.add_argument("--permutations", type=int, default=199)
    ap.add_argument("--fpr-sizes", type=int, nargs="*", default=[10, 24, 48, 72])
    ap.add_argument("--fpr-splits", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="", help="free text naming the input (e.g. which demo run) for the JSON")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    # Welch on a few nearly equal held-out scores (tiny sets): scipy warns about precision; the p-value is still usable.
    warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation")

    t0 = time.perf_counter()
    prov = provenance()  # at the start: the code that runs is the code loaded now
    df = pd.read_csv(args.scores)
    attacks = [c for c in df.columns if c not in NON_ATTACK_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]
    members = df[(df["label"] == 1) & (df["tier"] == args.tier)]
    nonmembers = df[df["label"] == 0]
    if members.empty:
        raise SystemExit(f"no members of tier {args.tier} in {args.scores}")
    xm, xn = members[attacks].to_numpy(float), nonmembers[attacks].to_numpy(float)
    groups = {"all": attacks}
    ref_free = [a for a in attacks if a in REFERENCE_FREE]
    if ref_free and len(ref_free) < len(attacks):
        groups["reference_free"] = ref_free
    sizes = [n for n in args.sizes if n <= min(len(xm), len(xn))]
    y = np.r_[np.ones(len(xm)), np.zeros(len(xn))]
    aucs = {a: float(roc_auc_score(y, np.r_[xm[:, k], xn[:, k]])) for k, a in enumerate(attacks)}
    print(f"tier {args.tier}: {len(xm)} members vs {len(xn)} non-members; AUCs " + ", ".join(f"{a} {v:.3f}" for a, v in aucs.items()))

    print("power:")
    pw = power(xm, xn, attacks, groups, sizes, args.draws, [n for n in args.crossfit_sizes if n in sizes], args.crossfit_draws,
               args.permutations, args.seed)
    print("false positives (non-members vs non-members):")
    t = time.perf_counter()
    fp = false_positives(xn, attacks, groups, args.fpr_sizes, args.fpr_splits, args.seed)
    print(f"  {time.perf_counter() - t:.1f}s")

    print("\ntexts needed per set for median p < 0.01 (None: not reached by the largest size):")
    for key, v in pw.items():
        curve = "  ".join(f"{r['size']}:{r['median_p']:.2g}" for r in v["curve"])
        print(f"  {key:34s} {v['n_needed']!s:>5}   ({curve})")
    print("\nfalse-positive rate at alpha 0.05 (splits of the non-members):")
    for key, v in fp.items():
        print(f"  {key:34s} " + "  ".join(f"n={n}: {r['fpr_at_0.05']:.3f}" for n, r in v.items()))

    if args.out:
        raw = Path(args.scores).read_bytes()
        result = {
            "benchmark": "setinfer_testbed", "provenance": prov,
            "inputs": {"scores": str(args.scores), "scores_sha256": hashlib.sha256(raw).hexdigest(), "label": args.label,
                       "tier": args.tier, "n_members": len(xm), "n_nonmembers": len(xn), "attacks": attacks, "groups": groups,
                       "auc_all_texts": aucs},
            "settings": {"sizes": sizes, "draws": args.draws, "crossfit_sizes": args.crossfit_sizes, "crossfit_draws": args.crossfit_draws,
                         "permutations": args.permutations, "crossfit_folds": 2, "fpr_sizes": args.fpr_sizes, "fpr_splits": args.fpr_splits,
                         "seed": args.seed, "aggregator": "NonNegativeLogistic(C=1) on standardized scores"},
            "protocol": __doc__.split("Input:", 1)[1].split("    python", 1)[0].strip(),
            "power": pw, "false_positives": fp, "seconds": time.perf_counter() - t0,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
