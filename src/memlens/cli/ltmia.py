"""``memlens ltmia``: generate training data, train and evaluate LT-MIA classifiers.

    memlens ltmia generate out/data --preset small          # CPU, minutes
    memlens ltmia train out/data --out out/clf.safetensors
    memlens ltmia eval out/data --out out/eval --modes family,domain
    memlens ltmia reproduce out/large --preset large --jobs 6   # the shipped classifier + its tables (GPU)
    memlens ltmia info [CLASSIFIER]
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import List, Optional

import typer

from memlens.cli._common import friendly_errors

ltmia_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="LT-MIA: learned membership inference (generate data, train, evaluate).")


def _data_preset(data: Path) -> str:
    from memlens.lab.ltmia.generate import GenerateConfig
    from memlens.ltmia.features import LTMIAError

    if not (data / "config.json").is_file():
        raise LTMIAError(f"{data} is not an LT-MIA data set (no config.json; make one with `memlens ltmia generate`)")
    return GenerateConfig.from_dict(json.loads((data / "config.json").read_text())).name


def _setup(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("memlens").setLevel(logging.INFO if verbose else logging.WARNING)


def _parse_sets(items: Optional[List[str]]) -> dict:
    from memlens.ltmia.features import LTMIAError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise LTMIAError(f"--set {item!r}: expected KEY=VALUE (a JSON value), e.g. members=200")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@ltmia_app.command()
@friendly_errors
def generate(
    out: Path = typer.Argument(..., help="output directory (an existing one is completed: missing runs only)"),
    preset: str = typer.Option("small", "--preset", help="tiny (CI), small (CPU, minutes) or large (GPU)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a config field, KEY=JSON, e.g. members=200"),
    device: str = typer.Option("auto", "--device"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="bases processed in parallel (worth it on a GPU)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads per process"),
    verbose: bool = typer.Option(True, "--verbose/--quiet"),
) -> None:
    """Fine-tune many tiny LMs (families x domains) and save per-token features with labels."""
    from memlens.lab.ltmia.generate import GenerateConfig
    from memlens.lab.ltmia.generate import generate as _generate

    _setup(verbose)
    cfg_file = out / "config.json"
    cfg = None if cfg_file.is_file() and not set_ else GenerateConfig.preset(preset, **_parse_sets(set_))
    t0 = time.perf_counter()
    _generate(out, cfg, device=device, jobs=jobs, threads=threads)
    m = json.loads((out / "manifest.json").read_text())
    typer.echo(f"{m['n_runs']} runs, {m['n_samples']} texts, {m['feature_dim']} features per token in {out} "
               f"({time.perf_counter() - t0:.0f}s)")


@ltmia_app.command()
@friendly_errors
def train(
    data: Path = typer.Argument(..., help="a directory written by `memlens ltmia generate`"),
    out: Path = typer.Option(Path("ltmia.safetensors"), "--out", "-o", help="classifier file (.safetensors; .json beside it)"),
    exclude_family: Optional[List[str]] = typer.Option(None, "--exclude-family", help="leave a family's runs out (repeatable)"),
    exclude_domain: Optional[List[str]] = typer.Option(None, "--exclude-domain", help="leave a domain's runs out (repeatable)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr"),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", min=0.0, max=0.5),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train a classifier on a generated data set (all runs, or all but some families/domains)."""
    from memlens.lab.ltmia.training import train_classifier

    _setup(verbose)
    _data_preset(data)
    path = train_classifier(data, out, exclude_family or [], exclude_domain or [], device=device, seed=seed, verbose=verbose,
                            epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction)
    meta = json.loads(path.with_suffix(".json").read_text())
    typer.echo(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB): {meta['training']['windows']} windows, "
               f"{meta['training']['seconds']}s")


@ltmia_app.command("eval")
@friendly_errors
def eval_(
    data: Path = typer.Argument(..., help="a directory written by `memlens ltmia generate`"),
    out: Path = typer.Option(Path("ltmia-eval"), "--out", "-o", help="writes transfer.json and transfer.md"),
    modes: str = typer.Option("family,domain", "--modes", help="comma-separated: family, domain, paper"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="folds trained in parallel"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Leave-one-family-out / leave-one-domain-out transfer tables against the baselines."""
    from memlens.lab.ltmia.evaluate import markdown_tables, save_result, transfer_eval
    from memlens.lab.ltmia.training import EVAL_PRESETS, train_settings

    _setup(verbose)
    preset = _data_preset(data)

    kw = {**train_settings(preset, epochs=epochs, batch_size=batch_size), **EVAL_PRESETS.get(preset, {})}
    result = transfer_eval(data, [m.strip() for m in modes.split(",") if m.strip()], device=device, jobs=jobs, threads=threads, **kw)
    save_result(result, out)
    typer.echo(markdown_tables(result))
    typer.echo(f"wrote {out / 'transfer.json'} and {out / 'transfer.md'} ({result['seconds']}s)")


@ltmia_app.command()
@friendly_errors
def reproduce(
    out: Path = typer.Argument(..., help="working directory: data/, ltmia_default.safetensors, eval/"),
    preset: str = typer.Option("large", "--preset"),
    modes: str = typer.Option("family,domain,paper", "--modes"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="parallel processes for generation and evaluation"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    device: str = typer.Option("auto", "--device"),
    skip_eval: bool = typer.Option(False, "--skip-eval"),
) -> None:
    """Generate the data, train the default classifier on all of it, and run the transfer evaluation.

    ``memlens ltmia reproduce out/large --preset large --jobs 6`` rebuilds the shipped
    classifier (copy out/large/ltmia_default.{safetensors,json} to memlens/data/)."""
    from memlens.lab.ltmia.recipes import reproduce as _reproduce

    _setup(True)
    summary = _reproduce(out, preset, [m.strip() for m in modes.split(",") if m.strip()], jobs=jobs, threads=threads,
                         device=device, evaluate=not skip_eval)
    if not skip_eval:
        typer.echo((out / "eval" / "transfer.md").read_text())
    typer.echo(json.dumps(summary["timings"]))


@ltmia_app.command()
@friendly_errors
def info(path: str = typer.Argument("default", help="classifier file, or 'default'")) -> None:
    """Print a classifier's feature spec and training summary."""
    from memlens.ltmia import load_classifier

    clf = load_classifier(path)
    meta = dict(getattr(clf, "meta", {}))
    data = meta.get("data", {})
    typer.echo(json.dumps({"features": {k: v for k, v in clf.spec.to_dict().items() if k != "names"}, "net": meta.get("net"),
                           "training": meta.get("training"), "data": {k: v for k, v in data.items() if k not in ("runs", "config")},
                           "weights_sha256": meta.get("weights_sha256")}, indent=2, default=str))
