"""``memlens audit | attack | score | extract | report | show | attacks``: the library's own commands.

Heavy modules (torch, transformers, pandas) are imported inside the commands, so ``memlens --help``
stays fast."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from memlens.cli._common import console, friendly_errors, parse_params, print_metrics, setup

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for training-data memorization.")

# Options shared by audit / attack / score.
TargetOpt = typer.Option(..., "--target", "-t", help="target model: hub id, local directory or .gguf file")
RefOpt = typer.Option(None, "--reference", "-r", help="reference model(s) (repeat the flag for several)")
# the default is memlens.report.html.DEFAULT_REPORT_TEXTS (not imported here: it would slow `memlens --help`)
REPORT_TEXTS_HELP = "texts with a token-level view in report.html (the rest: `memlens show ID`)"


@app.command()
@friendly_errors
def audit(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    reference_splits: Optional[Path] = typer.Option(None, "--reference-splits", help="JSON: which --reference trained on which text "
                                                    "(from `memlens testbed references`); rmia/informia then run online"),
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
    report_texts: int = typer.Option(200, "--report-texts", min=0, help=REPORT_TEXTS_HELP),
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
    setup(verbose)
    import memlens

    if members is None and nonmembers is None and data is None:
        raise typer.BadParameter("give --members and --nonmembers, or --data with a label field")
    result = memlens.audit(
        target, reference or None, members=members, nonmembers=nonmembers, data=data, population=population,
        attacks=attacks, attack_params=parse_params(param), gguf_file=gguf_file, device=device, dtype=dtype,
        device_map=device_map, batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature,
        cache_dir=None if no_cache else (cache_dir or "default"), trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, text_field=text_field, n_bootstrap=bootstrap, seed=seed, cache_only=_cache_only,
        model_kind=model_kind, reference_splits=reference_splits,
        masked={"steps": mask_steps, "alpha_min": mask_min, "alpha_max": mask_max, "nested": not independent_masks,
                "mask_token_id": mask_token_id, "auto_class": masked_auto_class},
    )
    if result is None or int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun every process scores its share; the first one writes the results
    result.save(out, report=False)  # the report below, with the --report-texts choice
    if report:
        with result.stage("report"):
            _write_report(result, out, report_texts)
        result.write_results_json(out)  # again, with the report's time
    print_metrics(result)
    console.print(f"wrote {out}/scores.csv, results.json, roc.png" + (", report.html" if report and (out / 'report.html').exists() else ""))


def _write_report(result, out: Path, report_texts: int) -> None:
    from memlens.report import write_report

    write_report(result, out, report_texts=report_texts)


@app.command()
@friendly_errors
def attack(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    reference_splits: Optional[Path] = typer.Option(None, "--reference-splits"),
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
    report: bool = typer.Option(True, "--report/--no-report", help="write report.html"),
    report_texts: int = typer.Option(200, "--report-texts", min=0, help=REPORT_TEXTS_HELP),
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
    audit(target=target, reference=reference, reference_splits=reference_splits, members=members, nonmembers=nonmembers, data=data,
          population=population,
          attacks=attacks, param=param, out=out, text_field=text_field, gguf_file=gguf_file, device="cpu", dtype="auto",
          device_map=None, batch_size=None, max_length=max_length, stride=stride, temperature=temperature,
          cache_dir=cache_dir, no_cache=False, trust_remote_code=False, allow_pickle=False, bootstrap=bootstrap, seed=seed,
          report=report, report_texts=report_texts, model_kind=model_kind, mask_steps=mask_steps, mask_min=mask_min, mask_max=mask_max,
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
    setup(verbose)
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
    setup(False)
    import json as _json

    from memlens._io import write_jsonl
    from memlens.data import DataError, load_samples
    from memlens.extraction import extract as run_extract
    from memlens.extraction import secrets_from_samples, summarize
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
def report(results_dir: Path = typer.Argument(..., help="an audit's output directory"),
           report_texts: int = typer.Option(200, "--report-texts", min=0, help=REPORT_TEXTS_HELP)):
    """(Re)build the self-contained report.html of an audit's output directory."""
    setup(False)
    from memlens.report import write_report_from_dir

    console.print(f"wrote {write_report_from_dir(results_dir, report_texts=report_texts)}")


@app.command()
@friendly_errors
def show(
    text_id: str = typer.Argument(..., help="id of an audited text"),
    results_dir: Path = typer.Option(Path("out"), "--results", help="the audit's output directory (its --out)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", show_default=False,
                                              help="token score above which a token counts as leaked (default: the audit's "
                                                   "calibrated level, which 0.1% of non-member tokens exceed)"),
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


