"""``python -m memlens.cli`` (e.g. under ``torchrun --nproc-per-node N -m memlens.cli audit ...``)."""
from memlens.cli import main

main()
