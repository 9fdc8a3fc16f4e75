"""Blind baseline (memlens.blind) on same-distribution and shifted member / non-member pairs.

Null: the testbed's members vs non-members (one pool of profiles split at random), for --seeds
testbed seeds (data only, no training): the blind AUC's spread and how often the verdict says
"differ" or "inconclusive" (false alarms). Shifted: shifted_pair() (non-members of other document
kinds) at a few sizes: the blind AUC and verdict.

    python benchmarks/blind_null.py [--seeds 10] [--full]    (--full: the default testbed, 144 + 144 texts)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

import numpy as np

from memlens.blind import blind_baseline
from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
from memlens.testbed.shifted import shifted_pair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    aucs, verdicts = [], Counter()
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as d:
            cfg = TestbedConfig(seed=seed) if args.full else TestbedConfig.quick(seed=seed)
            p = build_testbed(d, cfg)
            mem, non = read_jsonl(p.members), read_jsonl(p.nonmembers)
        r = blind_baseline([x["text"] for x in mem + non], [1] * len(mem) + [0] * len(non), n_bootstrap=500)
        aucs.append(r.metrics.auc)
        verdicts[r.verdict] += 1
        lo, hi = r.metrics.auc_ci
        print(f"testbed seed {seed}: {len(mem)} vs {len(non)} texts  blind AUC {r.metrics.auc:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"{r.verdict}", flush=True)
    a = np.asarray(aucs)
    print(f"null ({'default' if args.full else 'quick'} testbed, {args.seeds} seeds): mean AUC {a.mean():.3f}, sd {a.std(ddof=1):.3f}, "
          f"range {a.min():.3f}-{a.max():.3f}, verdicts {dict(verdicts)}  ({time.perf_counter() - t0:.0f}s)")
    for n in (12, 24, 48):
        mem, non = shifted_pair(n)
        t = time.perf_counter()
        r = blind_baseline([x["text"] for x in mem + non], [1] * n + [0] * n, n_bootstrap=500)
        print(f"shifted pair (kind), {n} vs {n}: blind AUC {r.metrics.auc:.3f} {tuple(round(v, 3) for v in r.metrics.auc_ci)}  "
              f"{r.verdict}  ({time.perf_counter() - t:.1f}s)")


if __name__ == "__main__":
    main()
