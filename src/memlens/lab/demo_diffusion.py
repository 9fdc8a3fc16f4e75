"""``memlens demo --family diffusion``: SAMA against the DLM baselines on a tiny masked diffusion LM.

The data are the PII testbed's (:mod:`memlens.testbed`, the causal demo's corpus): members in
repetition tiers (1x / 4x / 16x per epoch), non-members of the same distribution, filler
documents in the fine-tuning stream and a pretraining corpus. A tiny bidirectional transformer
(:mod:`memlens.testbed.diffusion`: ``BertForMaskedLM`` trained with the random-ratio masking
objective of LLaDA / MDLM) is pretrained (the *base*, the attacks' reference) and then fine-tuned on
the stream (the *target*), under two conditions:

* ``no-shift``: the base is pretrained on the testbed's pretraining corpus (real prose plus
  documents of the same six kinds about other, never audited profiles): it knows the domain;
* ``shift``: the same prose, but the same-kind documents are replaced by as many documents of other
  genres (orders, company profiles, events, reviews): the fine-tuning domain differs from what the
  base saw, as when a general base is fine-tuned on a specialised corpus (the SAMA paper's setting).

Both conditions share one tokenizer, trained on both pretraining corpora (never on audited or
filler documents). Each condition is audited with ``memlens.audit(..., model_kind="masked",
attacks="all")`` (SAMA, ``dlm_loss``, ``dlm_ref``), with metrics overall and per repetition tier.

Output layout (``out_dir``)::

    testbed/                  the PII testbed's data (members.jsonl, nonmembers.jsonl, ...)
    tokenizer/                the shared tokenizer (with a mask token)
    no-shift/models/base      save_pretrained (safetensors) + tokenizer; base = the reference
    no-shift/models/target    the fine-tuned target
    no-shift/results.json     the audit (AuditResult.save: also scores.csv, roc.png, texts.jsonl, ...)
    shift/...                 the same for the shift condition
    summary.json              both conditions: metrics, per-tier metrics, winners, training, timings
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("memlens")

CONDITIONS = ("no-shift", "shift")

# PII testbed sizes (TestbedConfig overrides). At least 100 non-members, so that TPR at 1% FPR
# is supported (one false positive = 1%).
TESTBED_PRESETS: dict[str, dict[str, Any]] = {
    # 16 members per tier (48), 100 non-members, 600 background documents + 60k characters of prose
    "quick": {"n_nonmembers": 100},
    # 32 members per tier (96), 128 non-members, 1000 background documents + 90k characters of prose
    # (both conditions train and audit in about 6 minutes on 2 idle CPU cores)
    "full": {"members_per_tier": 32, "n_nonmembers": 128, "n_background_docs": 1000, "public_text_chars": 90_000},
}

# The diffusion LM and its training (DiffusionConfig fields).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # quick: a smoke test of the whole path; its bases stay near the unigram plateau (see below)
    "quick": dict(vocab_size=2048, hidden=128, layers=2, heads=4, intermediate=256, max_positions=256, batch_size=32,
                  pretrain_epochs=3.0, pretrain_lr=2e-3, finetune_epochs=3.0, finetune_lr=1e-3),
    # The same 0.6M-parameter model as quick, with more data, smaller batches and a longer pretraining.
    # Tiny masked LMs stay near the unigram plateau (6.3-6.4 nats per token, the corpora's unigram entropy)
    # for long: with 3 pretraining epochs the bases ended there (training loss 6.35), i.e. they knew
    # token frequencies and nothing of the documents, so that even "no-shift" fine-tuning taught
    # the target the domain. More, smaller updates get below it (quick testbed's base, 3 epochs:
    # batch 8 at lr 1e-3 reached 6.21 nats on the non-members, batch 32 at 2e-3 6.35; batch 16 for
    # 10 epochs a training loss of 5.87 and still falling). Both conditions take about 6 minutes on 2 idle cores.
    "full": dict(vocab_size=2048, hidden=128, layers=2, heads=4, intermediate=256, max_positions=256, batch_size=16,
                 pretrain_epochs=12.0, pretrain_lr=1e-3, finetune_epochs=3.0, finetune_lr=1e-3),
}


# Bootstrap resamples (overall metrics, per-tier metrics) by preset.
BOOTSTRAP: dict[str, tuple[int, int]] = {"quick": (200, 100), "full": (1000, 500)}


def testbed_config(quick: bool, seed: int = 0, **overrides: Any):
    """The PII testbed's :class:`~memlens.testbed.TestbedConfig` for the diffusion demo."""
    from memlens.testbed import TestbedConfig

    kw = {**TESTBED_PRESETS["quick" if quick else "full"], "seed": seed, **overrides}
    return TestbedConfig.quick(**kw) if quick else TestbedConfig(**kw)


def diffusion_config(quick: bool, seed: int = 0, **overrides: Any):
    """The diffusion LM's :class:`~memlens.testbed.diffusion.DiffusionConfig` for the demo."""
    from memlens.testbed.diffusion import DiffusionConfig

    names = {f.name for f in dataclasses.fields(DiffusionConfig)}
    bad = set(overrides) - names
    if bad:
        raise ValueError(f"unknown diffusion model settings {sorted(bad)}; known: {sorted(names)}")
    return DiffusionConfig(**{**MODEL_PRESETS["quick" if quick else "full"], "seed": seed, **overrides})


def resolve_conditions(condition: str | Sequence[str]) -> tuple[str, ...]:
    """"both" -> both conditions; a name or a list of names -> those, checked."""
    if isinstance(condition, str):
        conds = CONDITIONS if condition == "both" else (condition,)
    else:
        conds = tuple(condition)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)} or both, got {condition!r}")
    return conds


# --------------------------------------------------------------------------------------------
# Data and models, reused when already built with the same settings
# --------------------------------------------------------------------------------------------
def _ensure_testbed(root: Path, cfg) -> Any:
    """The PII testbed's data under ``root``: reused when its manifest holds the same config."""
    from memlens.testbed import TestbedPaths, build_testbed

    paths = TestbedPaths(root)
    if paths.manifest.is_file():
        try:
            same = json.loads(paths.manifest.read_text())["config"] == json.loads(json.dumps(cfg.to_dict()))
        except (ValueError, KeyError):
            same = False
        if same and all(p.is_file() for p in (paths.members, paths.nonmembers, paths.finetune_corpus, paths.pretrain_corpus)):
            return paths
    return build_testbed(root, cfg)


def _fingerprint(d: dict) -> str:
    from memlens._io import json_hash

    return json_hash(d, 16)


def _texts_sha(texts: Sequence[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


def _ensure_tokenizer(path: Path, texts: Sequence[str], vocab_size: int):
    """The shared tokenizer: the one saved in ``path`` when it was trained on the same texts, else a new one.

    Reusing it keeps a rerun's vocabulary, and so its trained models, even if the BPE trainer
    broke ties between equally frequent merges differently.
    """
    from transformers import PreTrainedTokenizerFast

    from memlens.testbed.diffusion import add_mask_token, train_tokenizer

    key = {"texts_sha256": _texts_sha(texts), "n_texts": len(texts), "vocab_size": int(vocab_size)}
    meta = path / "memlens_tokenizer.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text()) == key:
                return add_mask_token(PreTrainedTokenizerFast.from_pretrained(str(path)))
        except (ValueError, OSError):
            pass
    tokenizer = add_mask_token(train_tokenizer(texts, vocab_size))
    tokenizer.save_pretrained(path)
    meta.write_text(json.dumps(key) + "\n")
    return tokenizer


def _save_model(model, tokenizer, path: Path, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)  # safetensors
    tokenizer.save_pretrained(path)
    (path / "memlens_diffusion.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def _saved_meta(path: Path) -> dict | None:
    f = path / "memlens_diffusion.json"
    if not (f.is_file() and (path / "model.safetensors").is_file()):
        return None
    try:
        return json.loads(f.read_text())
    except ValueError:
        return None


def _train_condition(cond: str, corpora, tokenizer, mcfg, models_dir: Path, key: dict, *, device: str, progress: bool,
                     retrain: bool) -> dict:
    """Pretrain the base and fine-tune the target of one condition (or reuse them); save both."""
    from memlens.testbed.diffusion import build_diffusion_testbed

    fp = _fingerprint({**key, "condition": cond, "pretrain_texts": _texts_sha(corpora.pretrain[cond]),
                       "finetune_texts": _texts_sha(corpora.finetune)})
    base_dir, target_dir = models_dir / "base", models_dir / "target"
    metas = [_saved_meta(base_dir), _saved_meta(target_dir)]
    if not retrain and all(m is not None and m.get("fingerprint") == fp for m in metas):
        log.info("[%s] reusing the trained models in %s", cond, models_dir)
        return {"reused": True, "fingerprint": fp, **{k: metas[1].get(k) for k in ("pretrain", "finetune")}}
    tb = build_diffusion_testbed(cond, mcfg, tokenizer=tokenizer, pretrain_texts=corpora.pretrain[cond],
                                 members=corpora.members, nonmembers=corpora.nonmembers, member_tiers=corpora.member_tiers,
                                 finetune_texts=corpora.finetune, device=device, progress=progress)

    def summary(lg, n_texts) -> dict:
        k = max(1, len(lg.losses) // 10)
        return {"texts_per_epoch": n_texts, "steps": lg.steps, "seconds": round(lg.seconds, 2),
                "loss_first": float(np.mean(lg.losses[:k])), "loss_last": float(np.mean(lg.losses[-k:]))}

    train = {"pretrain": summary(tb.logs["pretrain"], len(corpora.pretrain[cond])),
             "finetune": summary(tb.logs["finetune"], len(corpora.finetune))}
    meta = {"fingerprint": fp, "condition": cond, "config": dataclasses.asdict(mcfg), **train}
    _save_model(tb.reference.cpu(), tokenizer, base_dir, {**meta, "role": "base (reference)"})
    _save_model(tb.target.cpu(), tokenizer, target_dir, {**meta, "role": "target (fine-tuned on the members)"})
    return {"reused": False, "fingerprint": fp, **train}


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def _winners(rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> dict[str, list[str]]:
    """Per metric, the attack(s) with the highest value (ties listed together; None skipped)."""
    out = {}
    for k in keys:
        vals = {a: r.get(k) for a, r in rows.items() if r.get(k) is not None}
        if vals:
            best = max(vals.values())
            out[k] = sorted(a for a, v in vals.items() if v >= best - 1e-12)
    return out


def condition_summary(result, per_tier: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one condition's audit: overall and per tier, and which attack wins where."""
    overall = {}
    for a, m in result.metrics.items():
        overall[a] = {"auc": m.auc, "auc_ci95": m.auc_ci, "tpr_at_0.1%fpr": m.tpr.get("0.1%"), "tpr_at_1%fpr": m.tpr.get("1%"),
                      "tpr_at_5%fpr": m.tpr.get("5%"), "n_members": m.n_members, "n_nonmembers": m.n_nonmembers}
    wins = {"overall": _winners(overall, ("auc", "tpr_at_1%fpr"))}
    for tier, rows in per_tier.items():
        wins[tier] = _winners(rows, ("auc", "tpr_at_1%fpr"))
    # SAMA's score takes few distinct values; how many non-members share the top one says how far
    # its votes saturate (a tie at the top caps its TPR at low FPR).
    df = result.scores
    diag = {}
    if "sama" in df.columns:
        non = df.loc[df["label"] == 0, "sama"].to_numpy()
        mem = df.loc[df["label"] == 1, "sama"].to_numpy()
        diag = {"sama_nonmember_mean": float(non.mean()), "sama_member_mean": float(mem.mean()),
                "sama_nonmembers_at_max": int(np.sum(non >= non.max() - 1e-12)),
                "sama_distinct_nonmember_scores": int(len(np.unique(non)))}
        info = result.attack_info.get("sama", {})
        if "beta_mean_per_step" in info:
            diag["sama_beta_mean_per_step"] = [round(float(b), 4) for b in info["beta_mean_per_step"]]
    if "dlm_ref" in df.columns:
        diag["dlm_ref_nonmember_mean"] = float(df.loc[df["label"] == 0, "dlm_ref"].mean())
        diag["dlm_ref_member_mean"] = float(df.loc[df["label"] == 1, "dlm_ref"].mean())
    return {"metrics": overall, "per_tier": per_tier, "winners": wins, "diagnostics": diag}


def winner_lines(summary: dict[str, Any]) -> list[str]:
    """One line per condition and metric: the best attack overall and on each repetition tier."""
    lines = []
    for cond, s in summary["conditions"].items():
        for key, label in (("auc", "AUC"), ("tpr_at_1%fpr", "TPR@1%FPR")):
            parts = []
            for where in ("overall", *s["per_tier"]):
                best = s["winners"].get(where, {}).get(key)
                if best:
                    parts.append(f"{where} {'/'.join(best) if len(best) < len(s['metrics']) else 'all tie'}")
            lines.append(f"{cond}: best {label}: {', '.join(parts) or 'n/a (too few non-members)'}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: per condition and attack, AUC, TPR@1%FPR and AUC per tier."""
    lines = []
    for cond, s in summary["conditions"].items():
        tiers = list(s["per_tier"])
        lines.append(f"== {cond}")
        lines.append(f"{'attack':10s} {'AUC':>6s} {'TPR@1%':>7s} " + " ".join(f"{'AUC ' + t:>8s}" for t in tiers)
                     + " " + " ".join(f"{'TPR1% ' + t:>10s}" for t in tiers))
        for a, m in s["metrics"].items():
            def fmt(v, w):
                return f"{'n/a' if v is None else f'{v:.3f}':>{w}s}"

            lines.append(f"{a:10s} {fmt(m['auc'], 6)} {fmt(m['tpr_at_1%fpr'], 7)} "
                         + " ".join(fmt(s["per_tier"][t][a]["auc"], 8) for t in tiers) + " "
                         + " ".join(fmt(s["per_tier"][t][a]["tpr_at_1%fpr"], 10) for t in tiers))
    return "\n".join(lines + winner_lines(summary))


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------
def run_diffusion_demo(out_dir: str | Path = "memlens-demo-diffusion", *, quick: bool = False,
                       condition: str | Sequence[str] = "both", seed: int = 0, device: str = "cpu", progress: bool = True,
                       filler: bool = True, n_bootstrap: int | None = None, num_threads: int | None = None,
                       retrain: bool = False, testbed_overrides: dict[str, Any] | None = None,
                       model_overrides: dict[str, Any] | None = None, masked: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (or reuse) the PII testbed's data, train the diffusion LMs of each condition, audit them.

    Args:
        out_dir: output directory (layout in the module docstring).
        quick: the small preset (48 members, 100 non-members, a 0.6M-parameter model; both
            conditions in about 3.5 minutes on 2 CPU cores) instead of the default one (96
            members, 128 non-members, the same model pretrained longer: about 6 minutes).
        condition: "no-shift", "shift" or "both".
        seed: one seed for everything: the testbed's profiles and splits, model initialisation,
            training order and masks, the masked pass's masks and SAMA's subsets. Another seed is
            an independent replication.
        device: where to train and score ("cpu", "cuda", "cuda:1", ...).
        filler: fine-tune on the testbed's stream as written (members in tiers + filler documents
            of other profiles); False: the members alone.
        n_bootstrap: bootstrap resamples of the metrics (default: :data:`BOOTSTRAP`, overall and per tier).
        num_threads: ``torch.set_num_threads`` for the run (None: leave torch's setting).
        retrain: retrain models even when ones with the same settings are saved in ``out_dir``.
        testbed_overrides / model_overrides: TestbedConfig / DiffusionConfig fields over the preset.
        masked: options of the masked pass (steps, alpha_min, alpha_max, nested), as for ``memlens.audit``.

    Returns:
        ``{"summary": dict (also written to summary.json), "results": {condition: AuditResult}, "out": Path}``.
    """
    import torch

    import memlens
    from memlens.audit import json_default
    from memlens.lab.demo import per_tier_metrics
    from memlens.testbed.diffusion import pii_corpora

    conds = resolve_conditions(condition)
    preset = "quick" if quick else "full"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        t0 = time.perf_counter()
        timings: dict[str, Any] = {}
        tcfg = testbed_config(quick, seed, **(testbed_overrides or {}))
        mcfg = diffusion_config(quick, seed, **(model_overrides or {}))
        paths = _ensure_testbed(out / "testbed", tcfg)
        corpora = pii_corpora(paths, filler=filler, seed=seed)
        if len(corpora.nonmembers) < 100:
            log.warning("%d non-members: TPR at 1%% FPR is not supported (needs at least 100)", len(corpora.nonmembers))
        tokenizer = _ensure_tokenizer(out / "tokenizer", corpora.tokenizer_texts, mcfg.vocab_size)
        timings["data_and_tokenizer_s"] = round(time.perf_counter() - t0, 2)
        manifest = json.loads(paths.manifest.read_text())
        key = {"testbed_files": manifest["files"], "model": dataclasses.asdict(mcfg), "filler": filler,
               "vocab": _fingerprint(tokenizer.get_vocab()), "device_kind": torch.device(device).type}

        results: dict[str, Any] = {}
        conditions: dict[str, Any] = {}
        for cond in conds:
            tc = time.perf_counter()
            cdir = out / cond
            train = _train_condition(cond, corpora, tokenizer, mcfg, cdir / "models", key, device=device,
                                     progress=progress, retrain=retrain)
            t_train = time.perf_counter() - tc
            ta = time.perf_counter()
            result = memlens.audit(
                target=str(cdir / "models" / "target"), references=[str(cdir / "models" / "base")],
                members=str(paths.members), nonmembers=str(paths.nonmembers), attacks="all", model_kind="masked",
                masked=masked, device=device, cache_dir=out / "cache", seed=seed,
                n_bootstrap=n_bootstrap if n_bootstrap is not None else BOOTSTRAP[preset][0], progress=progress)
            t_audit = time.perf_counter() - ta
            per_tier = per_tier_metrics(result, n_bootstrap=n_bootstrap if n_bootstrap is not None else BOOTSTRAP[preset][1],
                                        seed=seed)
            cs = condition_summary(result, per_tier)
            cs["train"] = train
            cs["timings"] = {"train_s": round(t_train, 2), "audit_s": round(t_audit, 2)}
            result.extra["diffusion_demo"] = {"condition": cond, "quick": quick, "seed": seed, "filler": filler,
                                              "model": dataclasses.asdict(mcfg), **cs}
            result.save(cdir)
            results[cond], conditions[cond] = result, cs
            timings[cond] = cs["timings"]
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        summary = {
            "quick": quick, "seed": seed, "device": device, "filler": filler, "conditions_run": list(conds),
            "testbed": {"root": str(paths.root), "config": tcfg.to_dict(), "counts": corpora.counts,
                        "members_by_tier": {f"{k}x": int(sum(t == k for t in corpora.member_tiers))
                                            for k in sorted(set(corpora.member_tiers))}},
            "model": {**dataclasses.asdict(mcfg), "vocab": len(tokenizer),
                      "parameters": _n_params(out / conds[0] / "models" / "target")},
            "conditions": conditions, "timings": timings,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
        return {"summary": summary, "results": results, "out": out}
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)


def _n_params(model_dir: Path) -> int | None:
    try:
        from safetensors import safe_open

        with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
            return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    except Exception:  # noqa: BLE001 - informational only
        return None
