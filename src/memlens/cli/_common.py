"""What every command group shares: the consoles, the one error printer, logging setup, parameter
parsing and the metrics table."""
from __future__ import annotations

import functools
import logging
import os
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

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
        except KeyboardInterrupt as e:
            err_console.print("interrupted: finished texts are cached; run the same command again to resume")
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``), raised like Ctrl-C so that what is scored gets written."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM handled like Ctrl-C (finish writing what is scored, then exit 143). Python handlers
    run in the main thread only, so this is a no-op elsewhere (e.g. a command invoked from a thread)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def setup(verbose: bool) -> None:
    handle_sigterm()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # the fast tokenizer encodes a batch on every core (Rust threads): 20,000 texts in ~1 s instead of ~14 s
    # on one core of a GPU host. Set, not left unset: unset, tokenizers warns at every fork after a
    # parallel encode; memlens's own processes are exec'd (the tokenizer process, the blind baseline) or
    # spawned (the lab's LT-MIA jobs), and its one forked pool (reading source files for the LT-MIA corpora)
    # uses no tokenizer. A value the user set is kept.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # its "Loading weights" bars, like the rest of its logging


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
    shown = (getattr(result, "extra", {}).get("blind") or {}).get("warning")  # print_blind put it above the table
    notes = sorted(({n for m in result.metrics.values() for n in m.notes} | set(result.notes)) - {shown})
    for n in notes:
        console.print(f"[dim]note: {n}[/]", highlight=False)
    from memlens.leakage import text_flag_words

    lt = result.extra.get("leak_threshold")
    for line in (leak_threshold_line(lt), text_flag_words((lt or {}).get("text"))):
        if line:
            console.print(line, highlight=False, soft_wrap=True)


def leak_threshold_line(lt: Optional[dict]) -> Optional[str]:
    """The leak threshold in words: calibrated on which tokens, at which rate (or that it is a fixed level)."""
    if not lt:
        return None
    if lt.get("rate") is None:
        return (f"leaked tokens: {lt['attack']} above {lt['value']:g} {lt['unit']}, a fixed level (no non-member or population "
                "texts to calibrate on)")
    return (f"leaked tokens: {lt['attack']} above {lt['value']:.2f} {lt['unit']}, the level {lt['rate'] * 100:.2g}% of the "
            f"{lt['n_tokens']:,} {lt['source']} exceed (calibrated on texts never trained on)")
