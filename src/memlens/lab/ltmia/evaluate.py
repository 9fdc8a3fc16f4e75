"""Transfer evaluation of LT-MIA: leave-one-family-out and leave-one-domain-out.

For each fold a classifier is trained on the runs of every other family (domain) and scores the
held-out family's (domain's) runs, next to the baselines computed from the same paired pass of
the same runs. Metrics are computed per run (each run is one target model: an auditor thresholds
one model's scores) and averaged over the fold's runs; the pooled metrics over all of a fold's
texts are reported as well (they need no per-model calibration, which favours a learned score).
TPR at an FPR f is reported only where there are at least 1/f non-members.

``mode="paper"`` is the authors' headline protocol in small: train on the transformer families
on every domain but code; test on unseen architectures (non-transformers, seen domains), an
unseen domain (transformers on code) and both at once (non-transformers on code).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from memlens.lab.ltmia.generate import BASELINES, LTMIADataset

FPRS = (0.01, 0.001)
METHODS = ("ltmia", "loss", "minkpp", "ref", "rmia", "informia", "informia_token")


def run_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    from memlens.metrics import tpr_at_fpr

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, np.nanmin(scores[np.isfinite(scores)]) - 1 if np.isfinite(scores).any() else 0.0)
    out: dict[str, float | None] = {"auc": float(roc_auc_score(labels, scores))}
    for f in FPRS:
        out[f"tpr@{f * 100:g}%"] = tpr_at_fpr(labels, scores, f)
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def folds(ds: LTMIADataset, mode: str) -> list[dict[str, Any]]:
    """[{"mode", "held_out", "train_runs", "test": {cell name: runs}}] for ``mode`` family / domain / paper."""
    s = ds.samples.drop_duplicates("run")[["run", "family", "kind", "domain"]]
    out = []
    if mode in ("family", "domain"):
        for value in dict.fromkeys(s[mode]):
            train = s[s[mode] != value]["run"].tolist()
            test = s[s[mode] == value]["run"].tolist()
            if train and test:
                out.append({"mode": mode, "held_out": value, "train_runs": train, "test": {value: test}})
    elif mode == "paper":
        trans = s["kind"] == "transformer"
        code = s["domain"] == "code"
        cells = {"unseen architecture": s[~trans & ~code], "unseen domain (code)": s[trans & code],
                 "unseen architecture + domain": s[~trans & code]}
        train = s[trans & ~code]["run"].tolist()
        test = {k: v["run"].tolist() for k, v in cells.items() if len(v)}
        if train and test:
            out.append({"mode": mode, "held_out": "non-transformers + code", "train_runs": train, "test": test})
    else:
        from memlens.ltmia.features import LTMIAError

        raise LTMIAError(f"mode must be family, domain or paper, got {mode!r}")
    return out


def _train_and_score(root: str, fold: dict, clf_kwargs: dict, device: str, threads: int | None) -> dict:
    """Worker: train the fold's classifier, score its test runs, compute every method's metrics."""
    import torch

    from memlens.ltmia.classifier import LTMIAClassifier
    from memlens.ltmia.features import FeatureSpec

    if threads:
        torch.set_num_threads(threads)
    ds = LTMIADataset.load(root)
    cfg = ds.config
    spec = FeatureSpec(k=cfg.k, max_tokens=cfg.max_tokens, space=cfg.space)
    clf_kwargs = dict(clf_kwargs)
    max_windows = clf_kwargs.pop("max_train_windows", None)
    x, lens, y, _ = ds.arrays(fold["train_runs"], max_windows=max_windows)
    clf = LTMIAClassifier(spec, device=device, **clf_kwargs)
    clf.fit(x, y, lengths=lens)
    del x
    result = {k: v for k, v in fold.items() if k != "test"}
    result["classifier"] = {k: v for k, v in clf.history.items() if k != "log"}
    cells = {}
    for cell, runs in fold["test"].items():
        per_run: dict[str, dict[str, dict]] = {}
        pooled_scores: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
        pooled_labels = []
        for run in runs:
            xr, lr, yr, rr = ds.arrays([run])
            scores = {"ltmia": clf.decision_function(xr, lr)}
            for b in BASELINES:
                if f"score_{b}" in rr:
                    scores[b] = rr[f"score_{b}"].to_numpy()
            per_run[run] = {m: run_metrics(yr, s) for m, s in scores.items()}
            for m in METHODS:
                if m in scores:  # pooled: raw scores under one threshold for all runs
                    pooled_scores[m].append(scores[m])
            pooled_labels.append(yr)
        methods = [m for m in METHODS if pooled_scores[m]]
        mean = {m: {k: _mean([per_run[r][m][k] for r in runs]) for k in per_run[runs[0]][m]} for m in methods}
        labels = np.concatenate(pooled_labels)
        pooled = {m: run_metrics(labels, np.concatenate(pooled_scores[m])) for m in methods}
        cells[cell] = {"runs": runs, "per_run": per_run, "mean": mean, "pooled": pooled,
                       "n_members": int(labels.sum()), "n_nonmembers": int((1 - labels).sum())}
    result["cells"] = cells
    return result


def _default_task(root: str, path: str, settings: dict, device: str, threads: int | None) -> dict:
    import torch

    from memlens.lab.ltmia.training import train_classifier

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    p = train_classifier(root, path, device=device, **settings)
    return {"default_classifier": str(p), "seconds": round(time.perf_counter() - t0, 1)}


def transfer_eval(root: str | Path, modes: Sequence[str] = ("family", "domain"), *, device: str = "auto", jobs: int = 1,
                  threads: int | None = None, also_train: tuple[str | Path, dict] | None = None,
                  **clf_kwargs: Any) -> dict[str, Any]:
    """Train one classifier per fold and evaluate it against the baselines. Returns a JSON-able dict.

    ``clf_kwargs``: :class:`LTMIAClassifier` settings, plus ``max_train_windows`` (a fold's
    classifier trains on at most that many windows, an equal share of each training run).
    ``also_train=(path, settings)`` trains a classifier on every run in the same process pool
    (the shipped classifier; see :func:`memlens.lab.ltmia.recipes.reproduce`)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ds = LTMIADataset.load(root)
    all_folds = [f for m in modes for f in folds(ds, m)]
    t0 = time.perf_counter()
    default = None
    if jobs > 1 and len(all_folds) + bool(also_train) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(all_folds) + bool(also_train)), mp_context=mp.get_context("spawn")) as ex:
            dfut = ex.submit(_default_task, str(root), str(also_train[0]), also_train[1], device, threads) if also_train else None
            futs = [ex.submit(_train_and_score, str(root), f, clf_kwargs, device, threads) for f in all_folds]
            results = [f.result() for f in futs]
            default = dfut.result() if dfut else None
    else:
        if also_train:
            default = _default_task(str(root), str(also_train[0]), also_train[1], device, threads)
        results = [_train_and_score(str(root), f, clf_kwargs, device, threads) for f in all_folds]
    out = {"data": str(root), "config": ds.config.to_dict(), "classifier_settings": clf_kwargs, "device": device,
           "seconds": round(time.perf_counter() - t0, 2), "folds": results}
    if default:
        out["default_classifier"] = default
    try:
        if device.startswith("cuda"):
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover
        pass
    return out


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def markdown_tables(result: dict[str, Any], which: str = "mean") -> str:
    """README-ready tables: one per mode, a row per held-out cell, AUC / TPR@1% / TPR@0.1% per method.

    ``which``: "mean" (per-run metrics averaged over the cell's runs) or "pooled"."""
    lines: list[str] = []
    by_mode: dict[str, list[tuple[str, dict]]] = {}
    for f in result["folds"]:
        for cell, c in f["cells"].items():
            by_mode.setdefault(f["mode"], []).append((cell, c))
    titles = {"family": "Leave one family out", "domain": "Leave one domain out", "paper": "Transformers on non-code domains -> unseen"}
    for mode, cells in by_mode.items():
        methods = [m for m in METHODS if all(m in c[which] for _, c in cells)]
        lines.append(f"**{titles.get(mode, mode)}** ({'mean over held-out runs' if which == 'mean' else 'pooled over held-out runs'}; "
                     "AUC / TPR@1%FPR / TPR@0.1%FPR, TPRs in %)\n")
        lines.append("| held out | runs | " + " | ".join(methods) + " |")
        lines.append("|---|---|" + "---|" * len(methods))
        agg: dict[str, dict[str, list]] = {m: {"auc": [], "tpr@1%": [], "tpr@0.1%": []} for m in methods}
        for cell, c in cells:
            row = [cell, str(len(c["runs"]))]
            best = max(c[which][m]["auc"] for m in methods)
            for m in methods:
                v = c[which][m]
                for k in agg[m]:
                    agg[m][k].append(v.get(k))
                auc = _fmt(v["auc"])
                auc = f"**{auc}**" if v["auc"] == best else auc
                row.append(f"{auc} / {_fmt(v.get('tpr@1%'), True)} / {_fmt(v.get('tpr@0.1%'), True)}")
            lines.append("| " + " | ".join(row) + " |")
        if len(cells) > 1:
            row = ["mean", str(sum(len(c["runs"]) for _, c in cells))]
            for m in methods:
                row.append(f"{_fmt(_mean(agg[m]['auc']))} / {_fmt(_mean(agg[m]['tpr@1%']), True)} / "
                           f"{_fmt(_mean(agg[m]['tpr@0.1%']), True)}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def save_result(result: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    md = markdown_tables(result, "mean") + "\n" + markdown_tables(result, "pooled")
    (out / "transfer.md").write_text(md, encoding="utf-8")
    return out
