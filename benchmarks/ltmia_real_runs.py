"""LT-MIA on real-model runs: the shipped classifier zero-shot, and what training on a real run changes.

    python benchmarks/ltmia_real_runs.py --runs seed1.npz seed2.npz [--synthetic DIR] [--audit seed1.json seed2.json]

Inputs: files written by ``benchmarks/smollm2_references.py --export-ltmia`` (one per fine-tuning run:
SmolLM2-135M + LoRA on a testbed with 144 members in tiers 1x/4x/16x and 144 non-members; the shipped
classifier's input windows, first window of each text, with the base as reference; labels, tiers and the
baselines' scores from the same pass). Measures, overall and per tier (members of one tier vs all
non-members), AUC and TPR@1%FPR with bootstrap intervals (:mod:`memlens.metrics`):

(a) ``zero_shot``: the shipped classifier on each run, beside the baselines' scores from the file;
(b) ``transfer``: trained on run A, tested on run B (every ordered pair):

    * ``finetune``: the shipped classifier's weights, trained further on A (``warm_start``);
    * ``scratch``: the same architecture trained from scratch on A only;
    * ``synthetic``: from scratch on a locally generated synthetic data set (``memlens ltmia generate``,
      the shipped recipe at a CPU scale; given with ``--synthetic``), and ``synthetic+A`` with A added
      (each real window weighing as one synthetic window).

  Each is trained with ``--train-seeds`` seeds (the synthetic ones with ``--synthetic-seeds``); the table's
  intervals are those of the first training seed (--seed-offset), the spread over seeds is reported beside. Training
  settings are fixed before looking at any test run (``SETTINGS``), and nothing of run B is used in
  training or model selection (the best epoch is chosen on 10% of the training windows).

Writes ``OUT/ltmia_real_runs.json`` (numbers, settings, the inputs' SHA-256, commit, machine) and
``OUT/ltmia_real_runs.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from informia_claim import commit  # noqa: E402

BASELINES = ("loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token")
# Training settings, fixed a priori. Fine-tuning: a tenth of the small preset's peak learning rate, so
# the shipped weights are adapted rather than overwritten; from scratch: the "small" preset's recipe,
# with fewer epochs on the (ten times larger) synthetic set to fit a shared 2-core CPU.
SETTINGS = {
    "finetune": dict(epochs=10, batch_size=32, lr=1e-4, val_fraction=0.1),
    "scratch": dict(epochs=15, batch_size=64, lr=1e-3, val_fraction=0.1),
    "synthetic": dict(epochs=6, batch_size=64, lr=1e-3, val_fraction=0.1),
}
MAX_STEPS: int | None = None  # --max-steps: a cap on every fit (a smoke test of the script, not a measurement)


def sha256(path: Path) -> str:
    from memlens.outputs import sha256_file

    return sha256_file(path)


def load_run(path: Path) -> dict:
    d = np.load(path)
    need = {"features", "lengths", "labels", "tiers"}
    if not need <= set(d.files):
        raise SystemExit(f"{path}: not an --export-ltmia file (missing {sorted(need - set(d.files))})")
    labels = d["labels"].astype(int)
    # scope_metrics' tiers: the member's repetition count, NaN for a non-member
    tiers = np.array([float(t) if lab == 1 else np.nan for t, lab in zip(d["tiers"], labels)])
    return {"path": str(path), "name": path.stem, "x": d["features"], "lengths": d["lengths"], "labels": labels, "tiers": tiers,
            "scores": {b: d[f"score_{b}"] for b in BASELINES if f"score_{b}" in d.files}}


def scopes(scores: np.ndarray, run: dict, n_bootstrap: int) -> dict:
    from memlens.lab.informia_claim import scope_metrics

    return scope_metrics(scores, run["labels"], run["tiers"], n_bootstrap, seed=0)


def _spec():
    from memlens.ltmia import load_classifier

    return load_classifier("default").spec


def _settings(method: str) -> dict:
    return {**SETTINGS[method], **({"max_steps": MAX_STEPS} if MAX_STEPS else {})}


def train(method: str, train_run: dict, seed: int, synthetic: tuple | None = None):
    """A classifier of ``method`` trained on ``train_run`` (and the synthetic arrays for the synthetic methods)."""
    from memlens.ltmia import DEFAULT_CLASSIFIER, LTMIAClassifier

    if method == "finetune":
        # a fresh copy of the shipped classifier (load_classifier's cached one must stay as shipped)
        clf = LTMIAClassifier.load(DEFAULT_CLASSIFIER, device="cpu")
        for k, v in _settings("finetune").items():
            setattr(clf, k, v)
        clf.warm_start, clf.seed = True, seed
        return clf.fit(train_run["x"], train_run["labels"], lengths=train_run["lengths"])
    if method == "scratch":
        clf = LTMIAClassifier(_spec(), device="cpu", seed=seed, **_settings("scratch"))
        return clf.fit(train_run["x"], train_run["labels"], lengths=train_run["lengths"])
    sx, slen, sy = synthetic
    if method == "synthetic":
        x, lens, y, w = sx, slen, sy, None
    else:
        # the real run's windows padded/cut to the synthetic windows' length or the other way round: one array
        t = max(sx.shape[1], train_run["x"].shape[1])
        x = np.zeros((len(sx) + len(train_run["x"]), t, sx.shape[2]), np.float16)
        x[:len(sx), :sx.shape[1]] = sx
        x[len(sx):, :train_run["x"].shape[1]] = train_run["x"]
        lens, y = np.r_[slen, train_run["lengths"]], np.r_[sy, train_run["labels"]]
        w = None  # each real window weighs as one synthetic window
    # the validation part (best epoch): random windows, synthetic runs and the real run mixed
    clf = LTMIAClassifier(_spec(), device="cpu", seed=seed, **_settings("synthetic"))
    return clf.fit(x, y, lengths=lens, sample_weight=w)


def load_synthetic(root: Path) -> tuple:
    from memlens.lab.ltmia.generate import LTMIADataset

    ds = LTMIADataset.load(root)
    spec = _spec()
    if ds.config.k != spec.k or ds.config.space != spec.space:
        raise SystemExit(f"{root}: k={ds.config.k}, space={ds.config.space}; the shipped classifier's features need k={spec.k}, "
                         f"space={spec.space} (generate with --set k={spec.k})")
    x, lens, y, _ = ds.arrays(ds.runs)
    info = {"path": str(root), "preset": ds.config.name, "runs": len(ds.runs), "windows": int(len(y)),
            "families": sorted(set(ds.samples["family"])), "domains": sorted(set(ds.samples["domain"])),
            "max_tokens": ds.config.max_tokens, "manifest_sha256": sha256(root / "manifest.json")}
    return (np.asarray(x), np.asarray(lens), np.asarray(y).astype(int)), info


def _fmt(s: dict) -> str:
    tpr = s["tpr@1%"]
    return f"{s['auc']:.3f} [{s['auc_ci95'][0]:.2f}, {s['auc_ci95'][1]:.2f}] / {100 * tpr:.1f}"


def markdown(doc: dict) -> str:
    tiers = [k for k in next(iter(doc["zero_shot"].values()))["ltmia"] if k != "overall"]
    cols = ["overall", *tiers]
    lines = ["**Zero-shot** (the shipped classifier; AUC [95% CI] / TPR@1%FPR in %)", "",
             "| run | attack | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for run, res in doc["zero_shot"].items():
        for att, sc in res.items():
            lines.append(f"| {run} | {att} | " + " | ".join(_fmt(sc[c]) for c in cols) + " |")
    lines += ["", "**Trained on run A, tested on run B** (AUC [95% CI] / TPR@1%FPR in %, first training seed; "
              "AUC over training seeds: mean, min-max)", "",
              "| A -> B | classifier | " + " | ".join(cols) + " | AUC over training seeds |", "|---|---|" + "---|" * (len(cols) + 1)]
    for pair, res in doc["transfer"].items():
        for m, r in res.items():
            a = r["auc_by_train_seed"]
            spread = f"{np.mean(a):.3f} ({min(a):.3f}-{max(a):.3f}, n={len(a)})" if a else ""
            lines.append(f"| {pair} | {m} | " + " | ".join(_fmt(r["scopes"][c]) for c in cols) + f" | {spread} |")
    if doc.get("audit_check"):
        lines += ["", "**Zero-shot AUC against the audit's ltmia column** (base reference)", "",
                  "| run | this file (first window) | audit (all windows, full texts) | texts longer than a window |", "|---|---|---|---|"]
        for run, c in doc["audit_check"].items():
            lines.append(f"| {run} | {c['auc_here']:.4f} | {c['auc_audit']:.4f} | {c['texts_at_window_limit']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="--export-ltmia files (at least 2 for the transfer part)")
    ap.add_argument("--synthetic", type=Path, default=None, help="a `memlens ltmia generate` data set with k=20 (the synthetic rows)")
    ap.add_argument("--audit", type=Path, nargs="*", default=None, help="smollm2_references.json of each run, same order (zero-shot check)")
    ap.add_argument("--train-seeds", type=int, default=2)
    ap.add_argument("--synthetic-seeds", type=int, default=1)
    ap.add_argument("--seed-offset", type=int, default=0, help="training seeds start here (more seeds in another run)")
    ap.add_argument("--methods", nargs="*", default=None, help="a subset of finetune, scratch, synthetic, synthetic+A")
    ap.add_argument("--max-steps", type=int, default=None, help="cap every fit at this many steps (a smoke test only)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ltmia-real-smollm2"))
    a = ap.parse_args(argv)
    import torch

    global MAX_STEPS
    MAX_STEPS = a.max_steps
    torch.set_num_threads(a.threads)
    t0, sha = time.perf_counter(), commit()
    from memlens.ltmia import DEFAULT_CLASSIFIER, load_classifier

    runs = [load_run(p) for p in a.runs]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"runs need distinct file names: {names}")
    shipped = load_classifier("default")
    doc: dict = {
        "what": "LT-MIA on real fine-tuning runs (SmolLM2-135M + LoRA, base as reference): zero-shot and trained on another run",
        "commit": sha,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "device": "cpu", "threads": a.threads},
        "inputs": {str(p): sha256(p) for p in a.runs},
        "classifier": {"path": str(DEFAULT_CLASSIFIER), "weights_sha256": shipped.meta.get("weights_sha256")},
        "settings": {"train": SETTINGS, "max_steps": a.max_steps, "train_seeds": a.train_seeds, "synthetic_seeds": a.synthetic_seeds,
                     "seed_offset": a.seed_offset,
                     "bootstrap": a.bootstrap,
                     "scopes": "overall, and each tier's members against all non-members"},
        "runs": {r["name"]: {"texts": int(len(r["labels"])), "members": int(r["labels"].sum()),
                             "window_tokens_mean": float(r["lengths"].mean())} for r in runs},
        "zero_shot": {}, "transfer": {}, "timings": {},
    }
    zs_scores = {}
    for r in runs:
        s = shipped.decision_function(r["x"], r["lengths"])
        zs_scores[r["name"]] = s
        res = {"ltmia": scopes(s, r, a.bootstrap)}
        for b, v in r["scores"].items():
            res[b] = scopes(v, r, a.bootstrap)
        doc["zero_shot"][r["name"]] = res
        print(f"zero-shot {r['name']}: " + ", ".join(f"{k} {v['overall']['auc']:.3f}" for k, v in res.items()), flush=True)
    if a.audit:
        if len(a.audit) != len(runs):
            raise SystemExit("--audit takes one smollm2_references.json per run, in the same order")
        doc["audit_check"] = {}
        for r, p in zip(runs, a.audit):
            aud = json.loads(p.read_text())["results"]["base/ltmia (zero-shot)"]["overall"]["auc"]
            doc["audit_check"][r["name"]] = {
                "auc_here": doc["zero_shot"][r["name"]]["ltmia"]["overall"]["auc"], "auc_audit": aud, "audit_file": str(p),
                "audit_sha256": sha256(p),
                # the audit scores whole texts (the mean logit of all windows) where the file has the first window only
                "texts_at_window_limit": int((r["lengths"] >= shipped.spec.max_tokens).sum())}
        doc["inputs"].update({str(p): sha256(p) for p in a.audit})
    synthetic = None
    methods = ["finetune", "scratch"]
    if a.synthetic:
        synthetic, doc["synthetic"] = load_synthetic(a.synthetic)
        doc["inputs"][str(a.synthetic / "manifest.json")] = doc["synthetic"]["manifest_sha256"]
        methods += ["synthetic", "synthetic+A"]
    if a.methods:
        bad = set(a.methods) - set(methods)
        if bad:
            raise SystemExit(f"unknown or unavailable methods {sorted(bad)} (the synthetic ones need --synthetic); available: {methods}")
        methods = [m for m in methods if m in a.methods]
    doc["settings"]["methods"] = methods
    doc["timings"]["zero_shot_s"] = round(time.perf_counter() - t0, 1)
    synthetic_only: dict = {}
    for tr in runs:
        for te in runs:
            if tr is te:
                continue
            pair = f"{tr['name']} -> {te['name']}"
            res = {"zero-shot ltmia": {"scopes": doc["zero_shot"][te["name"]]["ltmia"], "auc_by_train_seed": []}}
            for b in ("minkpp", "ref", "loss"):
                if b in te["scores"]:
                    res[f"{b} (no training)"] = {"scopes": doc["zero_shot"][te["name"]][b], "auc_by_train_seed": []}
            for m in methods:
                t1 = time.perf_counter()
                aucs, first = [], None
                n_seeds = a.synthetic_seeds if m.startswith("synthetic") else a.train_seeds
                for seed in range(a.seed_offset, a.seed_offset + n_seeds):
                    if m == "synthetic":  # no real run in its training: the same classifiers for every pair
                        if seed not in synthetic_only:
                            synthetic_only[seed] = train(m, tr, seed, synthetic)
                        clf = synthetic_only[seed]
                    else:
                        clf = train(m, tr, seed, synthetic)
                    s = clf.decision_function(te["x"], te["lengths"])
                    sc = scopes(s, te, a.bootstrap if seed == a.seed_offset else 0)
                    aucs.append(sc["overall"]["auc"])
                    if seed == a.seed_offset:
                        first, hist = sc, {k: v for k, v in clf.history.items() if k != "log"}
                res[m] = {"scopes": first, "auc_by_train_seed": aucs, "history_first_seed": hist,
                          "seconds": round(time.perf_counter() - t1, 1)}
                print(f"{pair} {m}: AUC {first['overall']['auc']:.3f} (seeds {', '.join(f'{x:.3f}' for x in aucs)}) "
                      f"{time.perf_counter() - t1:.0f}s", flush=True)
                doc["transfer"][pair] = res
                write(doc, a.out, done=False)  # what is measured so far survives an interruption
    doc["timings"]["total_s"] = round(time.perf_counter() - t0, 1)
    print(write(doc, a.out, done=True))
    return 0


def write(doc: dict, out: Path, done: bool) -> str:
    doc["complete"] = done
    out.mkdir(parents=True, exist_ok=True)
    (out / "ltmia_real_runs.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    md = markdown(doc)
    (out / "ltmia_real_runs.md").write_text(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
