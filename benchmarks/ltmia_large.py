"""Rebuild the shipped LT-MIA classifier and its transfer tables in one command.

    python benchmarks/ltmia_large.py out/ltmia-large --preset large --jobs 6
    python benchmarks/ltmia_large.py out/ltmia-small --preset small            # CPU, minutes

Generates the data set (families x domains fine-tuning runs), trains the default classifier on
all runs, trains one classifier per leave-one-family-out / leave-one-domain-out fold (and the
"paper" split), and prints the tables and the timings. ``--copy-to DIR`` writes the classifier,
eval/transfer.{json,md}, summary.json and data_manifest.json there instead of OUT (the shipped
classifier: copy ltmia_default.{safetensors,json} to src/memlens/data/).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path


def _kv(items):
    out = {}
    for item in items or []:
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--set", dest="sets", action="append", help="data config override KEY=JSON")
    ap.add_argument("--train-set", dest="train_sets", action="append", help="classifier setting override KEY=JSON")
    ap.add_argument("--modes", default="family,domain,paper")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--eval-jobs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--copy-to", type=Path, default=None)
    ap.add_argument("--max-generate-seconds", type=float, default=None,
                    help="time budget of the generation: later runs are skipped (and listed in the manifest)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("memlens").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from memlens.lab.ltmia.recipes import reproduce

    t0 = time.perf_counter()
    summary = reproduce(a.out, a.preset, [m for m in a.modes.split(",") if m], jobs=a.jobs, eval_jobs=a.eval_jobs,
                        threads=a.threads, device=a.device, evaluate=not a.no_eval, overrides=_kv(a.sets),
                        train_overrides=_kv(a.train_sets), publish=a.copy_to,
                        max_generate_seconds=a.max_generate_seconds)
    pub = a.copy_to or a.out
    if not a.no_eval:
        print((pub / "eval" / "transfer.md").read_text())
    manifest = json.loads((pub / "data_manifest.json").read_text())
    runs = manifest["runs"]
    by_family: dict[str, list[float]] = {}
    for r in runs:
        by_family.setdefault(r["family"], []).append(r["seconds"])
    print(json.dumps({"timings": summary["timings"], "gpu": manifest.get("gpu"), "machine": manifest.get("machine"),
                      "generation": manifest["timings"],
                      "run_seconds_by_family": {f: round(sum(v), 1) for f, v in by_family.items()},
                      "base_seconds": {r["family"]: r["base_train"]["seconds"] for r in runs},
                      "n_runs": manifest["n_runs"], "n_samples": manifest["n_samples"],
                      "wall_s": round(time.perf_counter() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
