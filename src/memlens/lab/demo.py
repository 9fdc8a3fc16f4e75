"""``memlens demo``: build the PII testbed, train the tiny models, audit them end to end.

Everything is known by construction (which documents were trained on, how often, where each
PII value sits), so every number the demo prints can be checked against ground truth:
membership inference per repetition tier, verbatim extraction of PII values, and how well
token-level scores single out the PII tokens.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("memlens")


# --model-size presets (TestbedConfig fields); larger ones are for a GPU (--device cuda).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, d_model=128, n_head=4, d_ff=384),
    "small": dict(n_layer=4, d_model=192, n_head=4, d_ff=512),
    "base": dict(n_layer=6, d_model=384, n_head=6, d_ff=1536),
    "large": dict(n_layer=12, d_model=768, n_head=12, d_ff=3072),
}


def provenance() -> dict[str, Any]:
    """Which code made a result and where: the git commit (when run from a checkout; "+dirty" when
    it had uncommitted changes), memlens' version, the machine and its CPU count."""
    import memlens

    commit = None
    try:
        src = Path(memlens.__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10).stdout.strip() or None
        if commit and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True,
                                     text=True, timeout=10).stdout.strip():
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"commit": commit, "memlens_version": memlens.__version__, "machine": f"{cpu}, {cpus} CPUs usable ({platform.system()})",
            "python": platform.python_version()}


def per_tier_metrics(result, n_bootstrap: int = 200, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each attack's metrics on the members of one repetition tier against all non-members."""
    from memlens.metrics import evaluate

    df = result.scores
    if "tier" not in df.columns:
        return {}
    nonm = df[df["label"] == 0]
    out: dict[str, dict[str, Any]] = {}
    tiers = sorted({int(t) for t in df.loc[df["label"] == 1, "tier"].dropna()})
    for tier in tiers:
        mem = df[(df["label"] == 1) & (df["tier"] == tier)]
        sub = np.r_[np.ones(len(mem), int), np.zeros(len(nonm), int)]
        out[f"{tier}x"] = {}
        for attack in result.metrics:
            scores = np.r_[mem[attack].to_numpy(), nonm[attack].to_numpy()]
            m = evaluate(sub, scores, n_bootstrap=n_bootstrap, seed=seed)
            out[f"{tier}x"][attack] = {"auc": m.auc, "auc_ci95": m.auc_ci, "tpr_at_1%fpr": m.tpr["1%"], "tpr_at_5%fpr": m.tpr["5%"],
                                       "n_members": m.n_members, "n_nonmembers": m.n_nonmembers}
    return out


def token_localization(result) -> dict[str, Any]:
    """Localization of PII tokens in member texts: token InfoRMIA vs loss-only token scores."""
    from memlens.localization import localization

    members = [i for i, s in enumerate(result.samples) if s.label == 1 and s.meta.get("pii")]
    spans = [result.samples[i].meta["pii"] for i in members]
    starts = [result.target_stats[i].span_start for i in members]
    ends = [result.target_stats[i].span_end for i in members]
    out: dict[str, Any] = {}
    if "informia_token" in result.token_scores:
        out["informia_token"] = localization([result.token_scores["informia_token"][i] for i in members], starts, ends, spans)
    # loss-only token score: the target's log-probability of the token (high = memorized)
    out["loss_token"] = localization([result.target_stats[i].logprob for i in members], starts, ends, spans)
    return out


def leak_by_group(token_scores, span_starts, span_ends, pii_spans, ids, labels, tiers, lt: dict[str, Any]) -> dict[str, Any]:
    """Leaked tokens per group (``1x``/``4x``/``16x`` members, ``nonmember``) at the calibrated threshold ``lt``
    (results.json ``leak_threshold``): texts, mean tokens above it per text, the share of texts with any, the
    share flagged as leaking by the calibrated text-level flag and by the binomial tail alone (below the token
    rate, tokens taken as independent: the flag before calibration), and the share of those tokens that are PII."""
    from memlens.leakage import flag_texts, text_leak
    from memlens.localization import secret_token_mask

    thr, rate, null = float(lt["value"]), lt.get("rate"), lt.get("text") or {"rate": None}
    flags = flag_texts(token_scores, ids, labels, thr, rate, null)
    rows: dict[str, list] = {}
    for sc, a, b, spans, y, tier, flag in zip(token_scores, span_starts, span_ends, pii_spans, labels, tiers, flags):
        if y not in (0, 1) or (y == 1 and tier is None):
            continue
        sc = np.asarray(sc, dtype=np.float64)
        above = np.nan_to_num(sc, nan=-np.inf) > thr
        pii = secret_token_mask(np.asarray(a), np.asarray(b), spans or [])
        r = text_leak(sc, thr, rate)
        binomial = None if r["tail"] is None else r["tail"] < rate
        rows.setdefault("nonmember" if y == 0 else f"{int(tier)}x", []).append((int(above.sum()), int((above & pii).sum()), flag, binomial))
    out: dict[str, Any] = {}
    for g in sorted(rows, key=lambda g: (g == "nonmember", int(g[:-1]) if g != "nonmember" else 0)):
        k, k_pii, flag, binomial = zip(*rows[g])
        out[g] = {"texts": len(k), "leaked_tokens_per_text": float(np.mean(k)), "texts_with_leaked_tokens": float(np.mean(np.array(k) > 0)),
                  "flagged": None if None in flag else float(np.mean(flag)),
                  "flagged_binomial": None if None in binomial else float(np.mean(binomial)),
                  "pii_share_of_leaked": float(sum(k_pii) / sum(k)) if sum(k) else None}
    return out


def leak_by_group_of(result) -> dict[str, Any]:
    """:func:`leak_by_group` of an audit of the testbed (its calibrated token attack, PII spans and tiers)."""
    lt = result.extra.get("leak_threshold") or {}
    if lt.get("attack") not in result.token_scores:
        return {}
    toks = [np.asarray(t, dtype=np.float32).astype(np.float64) for t in result.token_scores[lt["attack"]]]  # as calibrated
    smp = result.samples
    return leak_by_group(toks, [st.span_start for st in result.target_stats], [st.span_end for st in result.target_stats],
                         [s.meta.get("pii") or [] for s in smp], [str(s.id) for s in smp], [s.label for s in smp],
                         [s.meta.get("tier") for s in smp], lt)


def localization_by_tier(result) -> dict[str, Any]:
    """Token localization (see :func:`token_localization`) for each tier's member
    documents, counting PII tokens two ways: ``all`` (every PII span, as the demo does) and
    ``first`` (only a value's first occurrence in its document; tokens of later occurrences,
    which any LM can copy from the context, are left out of the evaluation)."""
    from memlens.localization import localization, secret_token_mask

    by_tier: dict[str, dict] = {}
    for i, smp in enumerate(result.samples):
        if smp.label == 1 and smp.meta.get("pii") and smp.meta.get("tier") is not None:
            by_tier.setdefault(f"{int(smp.meta['tier'])}x", []).append(i)
    scorers = {"loss_token": [st.logprob for st in result.target_stats]}
    if "informia_token" in result.token_scores:
        scorers = {"informia_token": result.token_scores["informia_token"], **scorers}
    out: dict[str, Any] = {}
    for tier, idx in sorted(by_tier.items(), key=lambda kv: int(kv[0][:-1])):
        out[tier] = {}
        for name, scores in scorers.items():
            rows: dict[str, list] = {"all": [[], [], [], []], "first": [[], [], [], []]}
            for i in idx:
                text, spans = result.samples[i].text, result.samples[i].meta["pii"]
                st = result.target_stats[i]
                first = [sp for sp in spans if text[int(sp["start"]):int(sp["end"])] not in text[:int(sp["start"])]]
                repeat = [sp for sp in spans if sp not in first]
                keep = ~secret_token_mask(st.span_start, st.span_end, repeat) | secret_token_mask(st.span_start, st.span_end, first)
                sc = np.asarray(scores[i])
                for key, m, sp in (("all", slice(None), spans), ("first", keep, first)):
                    for lst, v in zip(rows[key], (sc[m], st.span_start[m], st.span_end[m], sp)):
                        lst.append(v)
            out[tier][name] = {k: localization(*v) for k, v in rows.items()}
    return out


def run_demo(out_dir: str | Path = "memlens-demo", *, quick: bool = False, profiles: int | None = None,
             model_size: str | None = None, epochs: int | None = None, device: str = "cpu", seed: int = 0,
             n_bootstrap: int | None = None, progress: bool = True, retrain: bool = False,
             say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build, train, audit, extract, localize; write ``out_dir/results.json`` and the report.

    ``profiles``: member profiles per repetition tier; ``model_size``: a key of MODEL_SIZES;
    ``epochs``: passes over the fine-tuning stream. Models already trained under ``out_dir`` with
    the same configuration and data are reused (``retrain=True``: train afresh), and the audit's
    statistics are cached in ``out_dir/cache``. ``say``: where progress lines go (default: the log)."""
    import memlens
    from memlens.data import load_samples
    from memlens.extraction import extract, secrets_from_samples, summarize, write_outcomes
    from memlens.models.loading import load_model, load_tokenizer, resolve_model
    from memlens.testbed import UNIQUE_PII_TYPES, build

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"quick": quick, "seed": seed, "device": device, "progress": progress}
    if profiles is not None:
        kwargs["members_per_tier"] = profiles
    if model_size is not None:
        if model_size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {model_size!r}; choose from {', '.join(MODEL_SIZES)}")
        kwargs.update(MODEL_SIZES[model_size])
    if epochs is not None:
        kwargs["finetune_epochs"] = epochs
    say = say or log.info
    paths = build(out / "testbed", retrain=retrain, **kwargs)
    timings["testbed_and_training_s"] = time.perf_counter() - t0
    training = json.loads((paths.models / "training.json").read_text())
    reused, trained = training.get("reused", []), training.get("trained", [])
    if reused:
        say(f"reusing trained models from {paths.models} ({', '.join(reused)}: same configuration and data, "
            f"fingerprint {training.get('fingerprint')}; --retrain trains them afresh)")
    if trained:
        say(f"trained {', '.join(trained)} in {timings['testbed_and_training_s']:.0f} s; saved in {paths.models}")

    t1 = time.perf_counter()
    result = memlens.audit(
        target=str(paths.target), references=[str(paths.base)], members=str(paths.members), nonmembers=str(paths.nonmembers),
        population=str(paths.population), attacks="all", device=device, cache_dir=out / "cache", seed=seed,
        n_bootstrap=n_bootstrap if n_bootstrap is not None else (200 if quick else 1000), progress=progress,
    )
    timings["audit_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    ms = resolve_model(str(paths.target))
    model, tok = load_model(ms, device=device), load_tokenizer(ms)
    samples = load_samples(paths.members, default_label=1) + load_samples(paths.nonmembers, default_label=0)
    # Identifying values only: a first name, age, city or job can be guessed, or copied from
    # earlier in the same text (a non-member's "Ryan" after "Ryan Johnson"), which is not leakage.
    outcomes = extract(model, tok, secrets_from_samples(samples, types=UNIQUE_PII_TYPES), progress=progress)
    extraction = summarize(outcomes)
    timings["extraction_s"] = time.perf_counter() - t2

    demo = {
        "testbed": str(paths.root),
        "quick": quick, "device": device, "seed": seed,
        "models": {"dir": str(paths.models), "fingerprint": training.get("fingerprint"), "reused": reused, "trained": trained},
        "provenance": provenance(),
        "per_tier": per_tier_metrics(result, n_bootstrap=100 if quick else 500, seed=seed),
        "extraction": {**extraction, "pii_types": list(UNIQUE_PII_TYPES)},
        "localization": token_localization(result),
        "leakage": leak_by_group_of(result),
        "timings": timings,
    }
    timings["total_s"] = time.perf_counter() - t0
    result.extra["demo"] = demo
    write_outcomes(out / "extraction.jsonl", outcomes)
    result.save(out)  # with report.html
    return {"result": result, "demo": demo, "out": out}
