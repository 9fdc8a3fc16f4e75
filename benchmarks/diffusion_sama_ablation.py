"""SAMA's settings and the noise it is built for, on a finished ``memlens demo --family diffusion`` run.

Reads the run's cached masked pass (no model runs again: ``cache_only``) and recomputes SAMA with
other settings than the paper's (subset size m, uniform step weights, losses frozen when first
masked) and the DLM baselines, plus diagnostics of the per-token loss difference
d = nll_ref - nll_target of non-members: its median (SAMA's null assumes 0: a vote is then a fair
coin), the share of positive tokens, and its tails (excess kurtosis; the paper's argument for
sign votes is heavy-tailed noise). This is an after-the-fact sensitivity analysis on the same
texts, not a way to choose settings: the demo's table keeps the paper's defaults.

    python benchmarks/diffusion_sama_ablation.py memlens-demo-diffusion [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "sama (paper: m=10, 1/t weights)": ("sama", {}),
    "sama m=1": ("sama", {"subset_size": 1}),
    "sama m=3": ("sama", {"subset_size": 3}),
    "sama m=30": ("sama", {"subset_size": 30}),
    "sama uniform weights": ("sama", {"weighting": "uniform"}),
    "sama losses=first (authors' code)": ("sama", {"losses": "first"}),
    "dlm_ref": ("dlm_ref", {}),
    "dlm_loss": ("dlm_loss", {}),
}


def analyse(run_dir: Path, condition: str) -> dict:
    import memlens.attacks  # noqa: F401  (registers the attacks)
    from memlens.attacks.base import get_attack
    from memlens.data import load_samples
    from memlens.metrics import evaluate
    from memlens.passes.masked import masked_attack_input, score_masked

    summary = json.loads((run_dir / "summary.json").read_text())
    res = json.loads((run_dir / condition / "results.json").read_text())
    mp = res["settings"]["masked_pass"]
    samples = load_samples(run_dir / "testbed" / "members.jsonl") + load_samples(run_dir / "testbed" / "nonmembers.jsonl")
    texts = [s.text for s in samples]
    labels = np.array([s.label for s in samples])
    tiers = np.array([s.meta.get("tier") or 0 for s in samples])
    models = run_dir / condition / "models"
    ex = score_masked(str(models / "target"), str(models / "base"), texts, cache=run_dir / "cache", seed=mp["seed"],
                      steps=mp["steps"], alpha_min=mp["alpha_min"], alpha_max=mp["alpha_max"], nested=mp["nested"],
                      max_length=mp["max_length"], cache_only=True)
    inp = masked_attack_input(texts, ex)
    out: dict = {"condition": condition, "seed": summary["seed"], "attacks": {}}
    for name, (attack, params) in VARIANTS.items():
        spec = get_attack(attack)
        sc = spec(inp, **params).scores
        m = evaluate(labels, sc, n_bootstrap=0)
        row = {"auc": m.auc, "tpr_at_1%fpr": m.tpr["1%"]}
        for k in sorted(set(tiers[labels == 1])):
            sel = (tiers == k) | (labels == 0)
            row[f"auc_{k}x"] = evaluate(labels[sel], sc[sel], n_bootstrap=0).auc
        non = sc[labels == 0]
        row["nonmembers_tied_at_max"] = int(np.sum(non >= non.max() - 1e-12))
        out["attacks"][name] = row
    # the per-token loss difference d = nll_ref - nll_target at masked positions
    diag = {}
    for lab, who in ((0, "nonmembers"), (1, "members")):
        d = np.concatenate([(p.nll_ref - p.nll_target)[p.mask] for p, y in zip(ex.probes, labels) if y == lab])
        z = (d - d.mean()) / d.std()
        diag[who] = {"median": float(np.median(d)), "mean": float(d.mean()), "share_positive": float(np.mean(d > 0)),
                     "excess_kurtosis": float(np.mean(z ** 4) - 3), "p1": float(np.percentile(d, 1)),
                     "p99": float(np.percentile(d, 99))}
    steps = len(ex.alphas)
    k = [np.median([int(p.mask[t].sum()) for p in ex.probes]) for t in range(steps)]
    diag["median_masked_tokens_per_step"] = [int(x) for x in k]
    diag["steps_with_fewer_than_m_masked"] = int(sum(x <= 10 for x in k))
    out["diagnostics"] = diag
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    conds = json.loads((args.run_dir / "summary.json").read_text())["conditions_run"]
    allres = [analyse(args.run_dir, c) for c in conds]
    for r in allres:
        print(f"== {r['condition']} (seed {r['seed']})")
        tiers = [k for k in next(iter(r["attacks"].values())) if k.startswith("auc_")]
        print(f"{'variant':36s} {'AUC':>6s} {'TPR@1%':>7s} " + " ".join(f"{t[4:]:>6s}" for t in tiers)
              + "  non-members tied at max")
        for name, row in r["attacks"].items():
            tpr = "n/a" if row["tpr_at_1%fpr"] is None else f"{row['tpr_at_1%fpr']:.3f}"
            print(f"{name:36s} {row['auc']:6.3f} {tpr:>7s} " + " ".join(f"{row[t]:6.3f}" for t in tiers)
                  + f"  {row['nonmembers_tied_at_max']}")
        d = r["diagnostics"]
        for who in ("nonmembers", "members"):
            x = d[who]
            print(f"  d = nll_ref - nll_target, {who}: median {x['median']:.3f}, mean {x['mean']:.3f}, "
                  f"share > 0 {x['share_positive']:.3f}, excess kurtosis {x['excess_kurtosis']:.1f}, "
                  f"1%..99% [{x['p1']:.2f}, {x['p99']:.2f}]")
        print(f"  median masked tokens per step: {d['median_masked_tokens_per_step']}")
    if args.json:
        args.json.write_text(json.dumps(allres, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
