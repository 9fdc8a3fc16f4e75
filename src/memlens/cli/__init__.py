"""The ``memlens`` command line (typer): :mod:`.main` (audit, attack, score, extract, report, show,
attacks), :mod:`.demo`, :mod:`.testbed`, :mod:`.ltmia`, :mod:`.canary`, :mod:`.trust` (blind, setinfer);
:mod:`._common` holds what they share.

The entry point is ``memlens.cli:app``. Nothing here imports torch until a command runs.
"""
from memlens.cli import demo as _demo
from memlens.cli import trust as _trust
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

__all__ = ["app"]
