"""``python -m memlens``: the command line."""
from memlens.cli import main

main()
