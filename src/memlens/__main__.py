"""``python -m memlens``: the command line."""
from memlens.cli import app

app()
