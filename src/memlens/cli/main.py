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
from memlens.cli._outputs import attack_out_dir, preflight_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for training-data memorization.")

# Options shared by audit / attack / score.
TargetOpt = typer.Option(..., "--target", "-t", help="target model: hub id, local directory or .gguf file")
RefOpt = typer.Option(None, "--reference", "-r", help="reference model(s) (repeat the flag for several); 'auto' with a PEFT "
                      "adapter as --target: the same model with the adapter disabled")
BaseOpt = typer.Option(None, "--base", help="base model of a PEFT adapter directory given as --target (default: its adapter_config)")
ScoreOpt = typer.Option("auto", "--score", help="tokens the attacks aggregate over: completion (prompt/completion records), "
                        "assistant (chat records), all, or auto (what the records imply)")
# the default is memlens.report.html.DEFAULT_REPORT_TEXTS (not imported here: it would slow `memlens --help`)
REPORT_TEXTS_HELP = "texts with a token-level view in report.html (the rest: `memlens show ID`)"
ATTACK_CHUNK_HELP = ("above this many texts the attacks run a chunk of this many at a time: memory holds a few chunks' "
                     "statistics, not every text's (same results)")


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
    base: Optional[str] = BaseOpt,
    score: str = ScoreOpt,
    canaries: Optional[Path] = typer.Option(None, "--canaries", help="canary manifest (memlens canary make): exposure in results.json"),
    canary_method: str = typer.Option("auto", "--canary-method", help="exposure: exact rank, extrapolated (skew-normal fit), "
                                      "or auto (exact up to 20000 fillings)"),
    canary_samples: int = typer.Option(2000, "--canary-samples", min=10, help="sampled fillings per canary for the extrapolated exposure"),
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
    attack_chunk: int = typer.Option(4096, "--attack-chunk", min=1, help=ATTACK_CHUNK_HELP),
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
    revision: Optional[str] = typer.Option(None, "--revision", help="target model revision (hub branch, tag or commit)"),
    reference_revision: Optional[str] = typer.Option(None, "--reference-revision", help="reference model(s) revision"),
    blind: bool = typer.Option(True, "--blind/--no-blind", help="also run the model-free blind baseline"),
    blind_folds: int = typer.Option(5, "--blind-folds", min=2, help="blind baseline: cross-validation folds"),
    blind_threshold: float = typer.Option(0.6, "--blind-threshold", help="blind baseline: AUC from which the sets count as different"),
    redact: bool = typer.Option(False, "--redact", help="replace secret spans in every output by typed placeholders"),
    redact_threshold: Optional[float] = typer.Option(None, "--redact-threshold", help="also redact tokens scored above this"),
    redact_field: str = typer.Option("pii", "--redact-field", help="field listing the {type, start, end} secret spans of each text"),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="benchmark: Parquet/JSONL, save_to_disk dir or hub id"),
    preset: Optional[str] = typer.Option(None, "--preset", help="benchmark layout: wikimia (input/label) or mimir (member/nonmember)"),
    split: Optional[str] = typer.Option(None, "--split", help="benchmark split (datasets with several)"),
    benchmark_config: Optional[str] = typer.Option(None, "--benchmark-config", help="benchmark config name (hub datasets)"),
    dataset_revision: Optional[str] = typer.Option(None, "--dataset-revision", help="benchmark revision (hub datasets)"),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="benchmark: label field (1 member, 0 non-member)"),
    member_field: Optional[str] = typer.Option(None, "--member-field", help="benchmark (paired layout): member text field"),
    nonmember_field: Optional[str] = typer.Option(None, "--nonmember-field", help="benchmark (paired layout): non-member text field"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="benchmark: the first N members and N non-members (paired: N rows)"),
    _run_kind: str = typer.Option("audit", "--run-kind", hidden=True),
):
    """Score member and non-member texts with every attack; write scores.csv, results.json, roc.png."""
    setup(verbose)
    import memlens
    from memlens.cli.trust import benchmark_samples, load_options, print_blind

    if benchmark is not None:
        if members is not None or nonmembers is not None or data is not None:
            raise typer.BadParameter("give --benchmark or --members/--nonmembers/--data, not both")
        data = benchmark_samples(benchmark, preset, split=split, config=benchmark_config, revision=dataset_revision,
                                 text_field=None if text_field == "text" else text_field, label_field=label_field,
                                 member_field=member_field, nonmember_field=nonmember_field, limit=limit)
    if members is None and nonmembers is None and data is None:
        raise typer.BadParameter("give --members and --nonmembers, or --data with a label field")
    preflight_cli(out, None if no_cache else (cache_dir or "default"), [members, nonmembers, data, population], 1 + len(reference or []))
    load, refs = load_options(reference, revision, reference_revision, gguf_file=gguf_file, device=device, dtype=dtype,
                              trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, device_map=device_map)
    result = memlens.audit(
        target, refs, members=members, nonmembers=nonmembers, data=data, population=population,
        attacks=attacks, attack_params=parse_params(param), gguf_file=gguf_file, load=load,
        batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature,
        cache_dir=None if no_cache else (cache_dir or "default"),
        text_field=text_field, n_bootstrap=bootstrap, seed=seed, cache_only=_cache_only, attack_chunk=attack_chunk,
        model_kind=model_kind, reference_splits=reference_splits, base=base, score=score, canaries=canaries,
        canary_options={"method": canary_method, "n_samples": canary_samples} if canaries is not None else None,
        masked={"steps": mask_steps, "alpha_min": mask_min, "alpha_max": mask_max, "nested": not independent_masks,
                "mask_token_id": mask_token_id, "auto_class": masked_auto_class},
        blind={"folds": blind_folds, "threshold": blind_threshold} if blind else False,
    )
    if result is None or int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun every process scores its share; the first one writes the results
    if redact or redact_threshold is not None:
        from memlens.redact import redact_result

        result = redact_result(result, field=redact_field, threshold=redact_threshold)  # once: the saved files and the report agree
    result.save(out, report=False, extra={"report.html": _report_writer(result, report_texts)} if report else None,
                info={"command": _run_kind, "attacks": attacks, "attacks_run": result.settings.get("attacks")})
    print_blind(result)
    print_metrics(result)
    _print_exposure(result)
    console.print(f"wrote {out}/scores.csv, results.json, roc.png" + (", report.html" if report and (out / 'report.html').exists() else ""))


def _print_exposure(result) -> None:
    exp = result.extra.get("canary_exposure")
    if not exp:
        return
    t = Table(title="canary exposure (bits)")
    for col in ("repetitions", "canaries", "mean", "min", "max"):
        t.add_column(col, justify="right")
    for r, row in exp["by_repetition"].items():
        t.add_row("held out" if r == "0" else r, str(row["n"]), f"{row['mean']:.2f}", f"{row['min']:.2f}", f"{row['max']:.2f}")
    console.print(t)


def _report_writer(result, report_texts: int):
    """report.html of the output set: written into the set's staging directory with the other files,
    before results.json (whose timings then include the report's)."""
    from memlens.report import write_report

    def write(path: Path) -> None:
        with result.stage("report"):
            write_report(result, path.parent, report_texts=report_texts)

    return write


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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory (default out/attack-NAMES, beside an audit's out/)"),
    force: bool = typer.Option(False, "--force", help="replace the outputs of another run in --out"),
    text_field: str = typer.Option("text", "--text-field"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    base: Optional[str] = BaseOpt,
    score: str = ScoreOpt,
    dtype: str = typer.Option("auto", "--dtype", help="the dtype the statistics were computed in: auto is float32 here (CPU); "
                              "after an audit on a GPU pass bfloat16"),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2),
    stride: Optional[int] = typer.Option(None, "--stride", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0),
    seed: int = typer.Option(0, "--seed"),
    attack_chunk: int = typer.Option(4096, "--attack-chunk", min=1, help=ATTACK_CHUNK_HELP),
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
    revision: Optional[str] = typer.Option(None, "--revision", help="target model revision (part of the cache key)"),
    reference_revision: Optional[str] = typer.Option(None, "--reference-revision", help="reference model(s) revision"),
    blind: bool = typer.Option(True, "--blind/--no-blind", help="also run the model-free blind baseline"),
    redact: bool = typer.Option(False, "--redact", help="replace the texts' pii spans in every output by typed placeholders"),
    redact_threshold: Optional[float] = typer.Option(None, "--redact-threshold", help="also redact tokens scored above this"),
):
    """Run attacks on cached statistics only (no model runs; fails if any statistic is missing)."""
    out = attack_out_dir(out, attacks, force)
    audit(target=target, reference=reference, reference_splits=reference_splits, members=members, nonmembers=nonmembers, data=data,
          population=population,
          attacks=attacks, param=param, out=out, text_field=text_field, gguf_file=gguf_file, base=base, score=score, canaries=None,
          canary_method="auto", canary_samples=2000, device="cpu", dtype=dtype,
          device_map=None, batch_size=None, max_length=max_length, stride=stride, temperature=temperature,
          cache_dir=cache_dir, no_cache=False, trust_remote_code=False, allow_pickle=False, bootstrap=bootstrap, seed=seed,
          attack_chunk=attack_chunk,
          report=report, report_texts=report_texts, model_kind=model_kind, mask_steps=mask_steps, mask_min=mask_min, mask_max=mask_max,
          independent_masks=independent_masks, mask_token_id=mask_token_id, masked_auto_class=masked_auto_class,
          verbose=verbose, _cache_only=True, revision=revision, reference_revision=reference_revision, blind=blind, blind_folds=5,
          blind_threshold=0.6, redact=redact, redact_threshold=redact_threshold, redact_field="pii", benchmark=None, preset=None,
          split=None, benchmark_config=None, dataset_revision=None, label_field=None, member_field=None, nonmember_field=None, limit=None,
          _run_kind="attack")


@app.command()
@friendly_errors
def score(
    target: str = TargetOpt,
    reference: Optional[List[str]] = RefOpt,
    texts: List[Path] = typer.Argument(..., help="files of texts to score"),
    text_field: str = typer.Option("text", "--text-field"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    base: Optional[str] = BaseOpt,
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
    revision: Optional[str] = typer.Option(None, "--revision", help="target model revision (hub branch, tag or commit)"),
    reference_revision: Optional[str] = typer.Option(None, "--reference-revision", help="reference model(s) revision"),
):
    """Compute and cache per-token statistics (the model pass) without running attacks."""
    setup(verbose)
    from memlens.audit import score_texts
    from memlens.cli.trust import load_options
    from memlens.data import load_samples
    from memlens.passes.causal import PassSettings

    preflight_cli(None, cache_dir or "default", texts, 1 + len(reference or []))
    all_texts = [s for p in texts for s in load_samples(p, text_field=text_field)]  # Samples: chats are rendered first
    options, refs = load_options(reference, revision, reference_revision, device=device, dtype=dtype,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    bundle = score_texts(target, refs or [], all_texts, gguf_file=gguf_file, base=base, cache_dir=cache_dir or "default",
                         settings=PassSettings(batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature),
                         options=options)
    n_tok = sum(len(s) for s in bundle.target)
    n_unique = len({s.text for s in all_texts})
    console.print(f"{len(all_texts)} texts, {n_tok} tokens: {bundle.computed} computed, {n_unique - bundle.computed} from cache")


@app.command()
@friendly_errors
def extract(
    target: str = TargetOpt,
    data: List[Path] = typer.Argument(..., help="texts with secret spans (e.g. the testbed's members.jsonl and nonmembers.jsonl)"),
    spans_field: str = typer.Option("pii", "--spans-field", help="field listing {type, start, end} spans of each text"),
    types: Optional[List[str]] = typer.Option(None, "--type", help="only secrets of this type (repeatable)"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    base: Optional[str] = BaseOpt,
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write extraction.jsonl and extraction.json here"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    revision: Optional[str] = typer.Option(None, "--revision", help="target model revision (hub branch, tag or commit)"),
):
    """Prompt with each text up to a secret, greedy-decode, count exact and fuzzy matches."""
    setup(False)
    import json as _json

    from memlens._io import write_jsonl
    from memlens.data import DataError, load_samples
    from memlens.extraction import extract as run_extract
    from memlens.extraction import secrets_from_samples, summarize

    samples = [s for p in data for s in load_samples(p)]
    secrets = secrets_from_samples(samples, field=spans_field, types=types or None)
    if not secrets:
        raise DataError(f"no secret spans found: the texts have no {spans_field!r} field with {{type, start, end}} entries")
    model, tok = _extract_model(target, base, gguf_file, device, trust_remote_code, allow_pickle, revision)
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


def _extract_model(target: str, base: Optional[str], gguf_file: Optional[str], device: str, trust_remote_code: bool, allow_pickle: bool,
                   revision: Optional[str] = None):
    """The model and tokenizer to generate with: a PEFT adapter directory on its base, or any model."""
    from memlens.data import DataError
    from memlens.models.adapters import is_adapter_dir, load_adapter
    from memlens.models.loading import load_model, load_tokenizer, resolve_model

    if is_adapter_dir(target):
        return load_adapter(target, base, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if base is not None:
        raise DataError("--base is the base model of a PEFT adapter; the target is not an adapter directory")
    ms = resolve_model(target, gguf_file=gguf_file, revision=revision, allow_pickle=allow_pickle)
    return load_model(ms, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle), \
        load_tokenizer(ms, trust_remote_code=trust_remote_code)


@app.command()
@friendly_errors
def report(
    results_dir: Path = typer.Argument(..., help="an audit's output directory"),
    report_texts: int = typer.Option(200, "--report-texts", min=0, help=REPORT_TEXTS_HELP),
    redact: bool = typer.Option(False, "--redact", help="replace the texts' pii spans by typed placeholders in the report"),
    redact_threshold: Optional[float] = typer.Option(None, "--redact-threshold", help="also redact every token scored above this"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the report here instead of DIR/report.html"),
):
    """(Re)build the self-contained report.html of an audit's output directory."""
    setup(False)
    from memlens.report import write_report_from_dir

    if redact or redact_threshold is not None:
        from memlens.report.html import write_redacted_report_from_dir

        path = write_redacted_report_from_dir(results_dir, threshold=redact_threshold, out=out, report_texts=report_texts)
        console.print(f"wrote {path} (redacted; the directory's texts.jsonl and token_scores.parquet still hold the secrets: "
                      "share only the report)")
        return
    console.print(f"wrote {write_report_from_dir(results_dir, out=out, report_texts=report_texts)}")


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


