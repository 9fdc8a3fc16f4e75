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

# Errors that are the user's to fix: shown as one line, exit code 2. Anything else is a bug.
USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    from memlens.attacks.base import AttackError
    from memlens.data import DataError
    from memlens.metrics import MetricsError
    from memlens.models.loading import ModelLoadError
    from memlens.pipeline import CacheMissError

    return (DataError, ModelLoadError, AttackError, MetricsError, CacheMissError, FileNotFoundError)


def friendly_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
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
    )
    result.save(out)
    if report:
        _write_report(result, out)
    print_metrics(result)
    console.print(f"wrote {out}/scores.csv, results.json, roc.png" + (", report.html" if report and (out / 'report.html').exists() else ""))


def _write_report(result, out: Path) -> None:
    try:
        from memlens.report import write_report
    except ImportError:
        return
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
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run attacks on cached statistics only (no model runs; fails if any statistic is missing)."""
    audit(target=target, reference=reference, members=members, nonmembers=nonmembers, data=data, population=population,
          attacks=attacks, param=param, out=out, text_field=text_field, gguf_file=gguf_file, device="cpu", dtype="auto",
          device_map=None, batch_size=None, max_length=max_length, stride=stride, temperature=temperature,
          cache_dir=cache_dir, no_cache=False, trust_remote_code=False, allow_pickle=False, bootstrap=bootstrap, seed=seed,
          report=True, verbose=verbose, _cache_only=True)


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
    from memlens.pipeline import LoadOptions, PassSettings

    all_texts = [s.text for p in texts for s in load_samples(p, text_field=text_field)]
    bundle = score_texts(target, reference or [], all_texts, gguf_file=gguf_file, cache_dir=cache_dir or "default",
                         settings=PassSettings(batch_size=batch_size, max_length=max_length, stride=stride, temperature=temperature),
                         options=LoadOptions(device=device, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle))
    n_tok = sum(len(s) for s in bundle.target)
    console.print(f"{len(all_texts)} texts, {n_tok} tokens: {bundle.computed} computed, {len(set(all_texts)) - bundle.computed} from cache")


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
        params = "\n".join(f"{k}={p.default!r}: {p.help}" for k, p in spec.params.items())
        table.add_row(name, needs or "-", params or "-", spec.description)
    console.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
