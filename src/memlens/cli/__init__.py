"""The ``memlens`` command line (typer): :mod:`.main` (audit, attack, score, extract, report, show,
attacks), :mod:`.demo`, :mod:`.testbed`, :mod:`.ltmia`, :mod:`.canary`, :mod:`.trust` (blind, setinfer), :mod:`.cache`;
:mod:`._common` holds what they share.

The entry point is ``memlens.cli:main`` (the typer ``app``, then a fast exit). Nothing here imports torch until a command runs.
"""
import os
import sys

import typer

from memlens.cli import demo as _demo
from memlens.cli import trust as _trust
from memlens.cli._help import apply_option_help
from memlens.cli.cache import cache_app
from memlens.cli.canary import canary_app
from memlens.cli.ltmia import ltmia_app
from memlens.cli.main import app
from memlens.cli.testbed import testbed_app

app.command("demo")(_demo.demo)
app.command("blind")(_trust.blind)
app.command("setinfer")(_trust.setinfer)
app.add_typer(testbed_app, name="testbed")
app.add_typer(ltmia_app, name="ltmia")
app.add_typer(canary_app, name="canary")
app.add_typer(cache_app, name="cache")


def _print_version(value: bool) -> None:
    if value:
        from memlens._version import __version__

        typer.echo(f"memlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print memlens' version and exit")) -> None:
    """Audit language models for training-data memorization."""


apply_option_help(app)  # the shared options' help texts, where a command gives none (cli/_help.py)


def main() -> None:
    """The process entry point (``memlens``, ``python -m memlens``, ``python -m memlens.cli``): the typer app,
    then an exit that skips freeing the heap object by object.

    After an audit of 20,000 texts the interpreter's teardown (hundreds of thousands of per-text arrays
    and records) took 1.1 s of a 13 s ``memlens attack``. Here the exit handlers still run (thread pools,
    worker processes, temporary directories, logging), the standard streams are flushed, and the process
    ends with typer's exit code; nothing is left unwritten, only the heap is not walked. ``app`` itself
    (what tests call in process) is unchanged."""
    import atexit
    import logging
    import threading

    code: object = 0
    try:
        app()
    except SystemExit as e:
        code = e.code
    if isinstance(code, str):  # SystemExit("message"): printed, exit status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code) if isinstance(code, int) else 1
    # what Python's own shutdown does first: wait for the threads that are not daemons (a writer still at work),
    # then run the exit handlers
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe (memlens ... | head)
            pass
    os._exit(status)


__all__ = ["app", "main"]
