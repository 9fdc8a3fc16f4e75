"""The InfoRMIA paper's claim, measured on the PII testbed: one base reference vs K split references.

For one seed: build the testbed and train base + target (reused when already trained), train K
reference models like the target on balanced random halves of the pool
(:func:`memlens.testbed.train.train_split_references`), then audit through :func:`memlens.audit`
in three settings:

* ``base``: the base model as the one reference (always OUT), offline with a = 1 (the defaults);
* ``split_online``: the K split references with their splits file: rmia/informia online (Pr(x) = mean of
  all references, each text IN for K/2 of them), ``ref`` calibrated by each text's OUT references,
  token-level InfoRMIA with q = the mixture of the references OUT for the text;
* ``split_offline``: the same references, offline (each text's OUT references), a = 1 and a tuned by
  Privacy Meter's grid search (each reference attacked with the others).

Metrics per tier (the members of one repetition tier against all non-members) and overall: AUC and
TPR at 0.1% and 1% FPR, with bootstrap intervals. :func:`combine` averages seeds (mean ± sd) into a
Markdown table. The runner is ``benchmarks/informia_claim.py``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FPRS = (0.001, 0.01)
METRICS = ("auc", "tpr@0.1%", "tpr@1%")
# The smallest testbed that still shows the tiers apart: for the CPU test (a few minutes on 2 cores).
TINY = dict(members_per_tier=8, n_background_docs=200, public_text_chars=20_000, n_layer=1, d_model=64, n_head=2, d_ff=128,
            vocab_size=512)


@dataclass(frozen=True)
class Row:
    """One line of the table: an attack with its parameters, in one reference setting."""

    setting: str
    label: str
    attack: str
    params: dict = field(default_factory=dict)


SETTINGS = {
    "base": "1 base reference (offline, a = 1)",
    "split_online": "K split references, online",
    "split_offline": "K split references, offline (OUT references)",
}

ROWS: tuple[Row, ...] = (
    Row("base", "loss", "loss"),
    Row("base", "minkpp", "minkpp"),
    Row("base", "ref", "ref"),
    Row("base", "rmia (a=1)", "rmia"),
    Row("base", "informia", "informia"),
    Row("base", "informia_token (mean)", "informia_token"),
    Row("base", "informia_token (bottomk)", "informia_token", {"agg": "bottomk"}),
    Row("split_online", "ref (OUT refs)", "ref"),
    Row("split_online", "rmia", "rmia"),
    Row("split_online", "informia", "informia"),
    Row("split_online", "informia_token (mean, OUT q)", "informia_token"),
    Row("split_online", "informia_token (bottomk, OUT q)", "informia_token", {"agg": "bottomk"}),
    Row("split_offline", "rmia (a=1)", "rmia", {"mode": "offline"}),
    Row("split_offline", "rmia (tuned a)", "rmia", {"tune_a": True}),
    Row("split_offline", "informia (a=1)", "informia", {"mode": "offline"}),
    Row("split_offline", "informia (tuned a)", "informia", {"tune_a": True}),
)


def _audit_groups(rows) -> list[tuple[str, dict[str, dict], list[Row]]]:
    """Rows grouped into audit calls: one attack name may appear once per call with one parameter set."""
    groups: list[tuple[str, dict[str, dict], list[Row]]] = []
    for row in rows:
        for setting, params, members in groups:
            if setting == row.setting and row.attack not in params:
                params[row.attack] = dict(row.params)
                members.append(row)
                break
        else:
            groups.append((row.setting, {row.attack: dict(row.params)}, [row]))
    return groups


def scope_metrics(scores, labels, tiers, n_bootstrap: int, seed: int) -> dict[str, dict[str, Any]]:
    """Overall and per-tier (members of one tier vs all non-members) AUC and TPR@FPR with intervals."""
    from memlens.metrics import evaluate

    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    bad = ~np.isfinite(scores)
    if bad.any():  # as the audit does: no score counts as the least likely member
        scores = np.where(bad, np.nanmin(np.where(bad, np.nan, scores)) - 1 if (~bad).any() else 0.0, scores)
    scopes = {"overall": np.ones(len(labels), bool)}
    for t in sorted({int(t) for t, lab in zip(tiers, labels) if lab == 1 and t is not None and t == t}):
        scopes[f"{t}x"] = (labels == 0) | np.array([lab == 1 and t2 is not None and t2 == t2 and int(t2) == t
                                                     for lab, t2 in zip(labels, tiers)])
    out = {}
    for name, m in scopes.items():
        r = evaluate(labels[m], scores[m], fprs=FPRS, n_bootstrap=n_bootstrap, seed=seed)
        out[name] = {"auc": r.auc, "auc_ci95": r.auc_ci, "tpr@0.1%": r.tpr["0.1%"], "tpr@0.1%_ci95": r.tpr_ci["0.1%"],
                     "tpr@1%": r.tpr["1%"], "tpr@1%_ci95": r.tpr_ci["1%"], "n_members": r.n_members, "n_nonmembers": r.n_nonmembers}
    return out


def prepare_testbed(root: Path, seed: int, *, quick: bool, size: dict | None, device: str, k: int, progress: bool,
                    repeats: int | None = None):
    """The seed's testbed with base, target and K split references; trained models are reused."""
    from memlens.testbed import TestbedPaths, build
    from memlens.testbed.train import train_split_references

    paths = TestbedPaths(root)
    if not (paths.target / "training.json").is_file():
        paths = build(root, quick=quick, seed=seed, device=device, progress=progress, **(size or {}))
    splits = train_split_references(paths, k, device, seed=seed, progress=progress, repeats=repeats)
    return paths, splits


def audit_rows(target, settings: dict[str, tuple[list, Any, str]], members: str, nonmembers: str, rows: tuple[Row, ...], *,
               device: str, cache_dir: Path, seed: int, n_bootstrap: int, progress: bool = False, tokenizer=None) -> tuple[dict, dict]:
    """Audit ``target`` once per group of rows (through :func:`memlens.audit`, the statistics cached across calls).

    ``settings``: setting name -> (references, reference splits or None, population file). Returns
    ({"setting/label": per-scope metrics}, {"setting/label": the mode and tuned a the attack reported}).
    """
    import memlens

    results: dict[str, dict] = {}
    info: dict[str, dict] = {}
    for setting, params, group in _audit_groups([r for r in rows if r.setting in settings]):
        refs, spl, population = settings[setting]
        res = memlens.audit(target, refs, members=members, nonmembers=nonmembers, population=population, attacks=",".join(params),
                            attack_params=params, reference_splits=spl, device=device, cache_dir=cache_dir, seed=seed,
                            n_bootstrap=0, progress=progress, tokenizer=tokenizer)
        labels = res.scores["label"].to_numpy()
        tiers = res.scores["tier"].tolist() if "tier" in res.scores else [None] * len(labels)
        for row in group:
            key = f"{row.setting}/{row.label}"
            results[key] = scope_metrics(res.scores[row.attack].to_numpy(), labels, tiers, n_bootstrap, seed)
            info[key] = {"mode": res.settings.get("attack_modes", {}).get(row.attack),
                         **{k: v for k, v in res.attack_info.get(row.attack, {}).items() if k in ("tuned_a", "warning", "note")}}
    return results, info


def run_seed(out_dir: str | Path, seed: int, *, quick: bool = True, size: dict | None = None, device: str = "cpu", k: int = 4,
             n_bootstrap: int = 1000, rows: tuple[Row, ...] = ROWS, progress: bool = False, num_threads: int | None = None,
             repeats: int | None = None) -> dict:
    """One seed of the study; writes ``out_dir/seed{seed}.json`` and returns its content."""
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    paths, splits = prepare_testbed(out / f"seed{seed}" / "testbed", seed, quick=quick, size=size, device=device, k=k,
                                    progress=progress, repeats=repeats)
    timings = {"models_s": round(time.perf_counter() - t0, 1)}
    split_refs = [str(paths.models / f"split_ref{i}") for i in range(k)]
    pop = str(paths.population)
    settings = {"base": ([str(paths.base)], None, pop), "split_online": (split_refs, splits, pop),
                "split_offline": (split_refs, splits, pop)}
    t1 = time.perf_counter()
    results, info = audit_rows(str(paths.target), settings, str(paths.members), str(paths.nonmembers), rows, device=device,
                               cache_dir=out / f"seed{seed}" / "cache", seed=seed, n_bootstrap=n_bootstrap, progress=progress)
    timings["audits_s"] = round(time.perf_counter() - t1, 1)
    doc = {"seed": seed, "quick": quick, "size": size or {}, "k": k, "repeats": repeats or "true tier", "device": device,
           "testbed": str(paths.root),
           "splits_file": str(splits), "settings": SETTINGS, "results": results, "info": info, "timings": timings}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed{seed}.json").write_text(json.dumps(doc, indent=1, default=_json))
    return doc


def _json(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


def combine(docs: list[dict]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{row key: {scope: {metric: {"mean", "sd", "n", "values"}}}} over the seeds' documents."""
    out: dict = {}
    for key in docs[0]["results"]:
        out[key] = {}
        for scope in docs[0]["results"][key]:
            out[key][scope] = {}
            for metric in METRICS:
                vals = [d["results"][key][scope][metric] for d in docs if d["results"].get(key, {}).get(scope)]
                vals = [float(v) for v in vals if v is not None]
                arr = np.array(vals, float)
                out[key][scope][metric] = {"mean": float(arr.mean()) if len(arr) else float("nan"),
                                           "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr), "values": vals}
    return out


def _cell(docs: list[dict], combined: dict, key: str, scope: str, metric: str) -> str:
    c = combined[key][scope][metric]
    if c["n"] == 0:
        return "—"
    if len(docs) == 1:  # one seed: the value and its bootstrap interval
        ci = docs[0]["results"][key][scope].get(f"{metric}_ci95")
        return f"{c['mean']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return f"{c['mean']:.3f} ± {c['sd']:.3f}"


def markdown(docs: list[dict], combined: dict | None = None) -> str:
    """One table per scope (overall, then each tier): rows = setting / attack, columns = the metrics."""
    combined = combined or combine(docs)
    seeds = ", ".join(str(d["seed"]) for d in docs)
    how = "mean ± sd over seeds" if len(docs) > 1 else "one seed: value [95% bootstrap interval]"
    lines = [f"Seeds {seeds} ({how}); K = {docs[0]['k']} split references.", ""]
    scopes = list(next(iter(combined.values())))
    for scope in scopes:
        lines += [f"**{scope}**", "", "| setting | attack | AUC | TPR@0.1%FPR | TPR@1%FPR |", "|---|---|---|---|---|"]
        for key in combined:
            setting, label = key.split("/", 1)
            cells = " | ".join(_cell(docs, combined, key, scope, m) for m in METRICS)
            lines.append(f"| {SETTINGS.get(setting, setting).replace('K ', str(docs[0]['k']) + ' ')} | {label} | {cells} |")
        lines.append("")
    tuned = {k: [d["info"][k].get("tuned_a") for d in docs] for k in docs[0]["info"] if "tuned_a" in docs[0]["info"][k]}
    for k, v in tuned.items():
        lines.append(f"- {k}: tuned a per seed = {', '.join(f'{x:g}' for x in v if x is not None)}")
    return "\n".join(lines) + "\n"
