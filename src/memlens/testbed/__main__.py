"""``python -m memlens.testbed OUT_DIR [--default] [--device cuda] [--check]``

Builds a testbed (data + tokenizer + base + target) and optionally prints the memorization
check. The ``memlens`` CLI is the front door; this is for building and verifying testbeds alone.
"""

from __future__ import annotations

import argparse
import json
import time

from . import build


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m memlens.testbed", description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--default", action="store_true", help="the larger default config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    ap.add_argument("--refs", type=int, default=0, help="population reference models")
    ap.add_argument("--data-only", action="store_true", help="write the data, train nothing")
    ap.add_argument("--check", action="store_true", help="print NLL per split and extraction")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    paths = build(
        args.out_dir,
        quick=not args.default,
        train=not args.data_only,
        device=args.device,
        num_threads=args.threads,
        seed=args.seed,
        n_reference_models=args.refs,
    )
    print(f"built {paths.root} in {time.perf_counter() - t0:.1f}s")
    if args.check and not args.data_only:
        from .check import memorization_report

        print(json.dumps(memorization_report(paths, device=args.device), indent=2))


if __name__ == "__main__":
    main()
