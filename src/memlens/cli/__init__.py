"""The ``memlens`` command line (typer): :mod:`.main` (audit, attack, score, extract, report, show,
attacks), :mod:`.demo`, :mod:`.testbed`, :mod:`.ltmia`, :mod:`.canary`, :mod:`.trust` (blind, setinfer);
:mod:`._common` holds what they share.

The entry point is ``memlens.cli:app``. Nothing here imports torch until a command runs.
"""
import typer

from memlens.cli import demo as _demo
from memlens.cli import trust as _trust
from memlens.cli._help import apply_option_help
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

__all__ = ["app"]
