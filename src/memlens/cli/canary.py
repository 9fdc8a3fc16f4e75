"""``memlens canary make|insert|exposure``: a typer sub-app, mounted on the main CLI with
``app.add_typer(canary_app, name="canary")``."""
# typer reads options from argument defaults: B008 is how typer works, not a mistake here
# ruff: noqa: B008
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from memlens.cli._common import console, friendly_errors

canary_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Canaries: make them, insert them into training data, measure their exposure after training.")


def _counts(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 1,4,16") from None


@canary_app.command("make")
@friendly_errors
def make(
    templates: list[str] = typer.Argument(..., help="templates with {...} slots, e.g. \"my SSN is {ddd-dd-dddd}\""),
    repetitions: str = typer.Option("1,4,16", "--repetitions", help="comma-separated repetition counts"),
    per_count: int = typer.Option(1, "--per-count", min=1, help="canaries per template and repetition count"),
    held_out: int | None = typer.Option(None, "--held-out", min=0, help="held-out canaries per template (default: --per-count)"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("canaries.json"), "--out", "-o", help="manifest to write"),
):
    """Make canaries from templates and write their manifest (inserted vs held-out, repetitions)."""
    from memlens.canary import make_canaries

    m = make_canaries(templates, _counts(repetitions), per_count=per_count, held_out=held_out, seed=seed)
    m.save(out)
    console.print(f"{len(m.inserted())} canaries to insert ({sum(c.repetitions for c in m.inserted())} copies), "
                  f"{len(m.held_out())} held out: {out}")


@canary_app.command("insert")
@friendly_errors
def insert(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="manifest from `memlens canary make` (updated with the insertions)"),
    train: Path = typer.Option(..., "--train", help="training file (.jsonl or .txt, one text per line)"),
    out: Path = typer.Option(..., "--out", "-o", help="training file with the canaries (same suffix)"),
    text_field: str = typer.Option("text", "--text-field"),
    seed: int = typer.Option(0, "--seed"),
):
    """Mix each inserted canary's copies into a training file at seeded random lines."""
    from memlens.canary import Manifest
    from memlens.canary import insert as insert_canaries

    m = insert_canaries(Manifest.load(manifest), train, out, seed=seed, text_field=text_field)
    m.save(manifest)
    n = sum(len(v) for v in m.insertions["lines"].values())
    console.print(f"{n} canary copies inserted: {out} ({m.insertions['n_records']} records); manifest {manifest} updated")


@canary_app.command("exposure")
@friendly_errors
def exposure(
    target: str = typer.Option(..., "--target", "-t", help="the trained model: directory, .gguf file, hub id or PEFT adapter directory"),
    manifest: Path = typer.Option(..., "--manifest", "-m"),
    base: str | None = typer.Option(None, "--base", help="base model of an adapter (default: its adapter_config.json)"),
    gguf_file: str | None = typer.Option(None, "--gguf-file"),
    out: Path = typer.Option(Path("exposure.json"), "--out", "-o"),
    method: str = typer.Option("auto", "--method", help="auto, exact (rank among every filling) or extrapolated (skew-normal fit)"),
    max_enumerate: int = typer.Option(20_000, "--max-enumerate", min=1, help="auto: rank exactly up to this many fillings"),
    samples: int = typer.Option(2_000, "--samples", min=20, help="candidates sampled for the extrapolated estimate"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    seed: int = typer.Option(0, "--seed"),
):
    """Exposure (log2|R| − log2 rank) of every canary, per repetition count, into a JSON file."""
    from memlens.canary import target_exposure

    res = target_exposure(target, manifest, base=base, gguf_file=gguf_file, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, batch_size=batch_size,
                          method=method, max_enumerate=max_enumerate, n_samples=samples, seed=seed)
    res.save(out)
    table = Table(title="canary exposure (bits)")
    for col in ("repetitions", "canaries", "mean", "median", "min", "max"):
        table.add_column(col, justify="right")
    for r, s in res.by_repetition().items():
        table.add_row("held out" if r == 0 else str(r), str(s["n"]), *(f"{s[k]:.2f}" for k in ("mean", "median", "min", "max")))
    console.print(table)
    sizes = sorted({c.space_size for c in res.canaries})
    methods = sorted({c.method for c in res.canaries})
    console.print(f"[dim]|R| = {', '.join(map(str, sizes))}; {', '.join(methods)}; written to {out}[/]")
