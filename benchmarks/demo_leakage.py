"""Leaked tokens per testbed group at the calibrated threshold, recomputed from a saved demo output directory.

For a demo run made before ``results.json`` recorded ``demo.leakage`` (or to recheck one): reads the saved
token scores (token_scores.parquet, as the audit rounded them), PII spans (texts.jsonl) and tiers
(scores.csv), calibrates the token threshold and the text-level flag with today's :mod:`memlens.leakage`
exactly as the audit does, and prints :func:`memlens.lab.demo.leak_by_group`. ``--into FILE`` stores the
numbers in a demo result file as ``demo.leakage`` (with how they were made), for the README's table.

    python benchmarks/demo_leakage.py memlens-demo --into benchmarks/results/demo-default-2cores.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def recompute(out_dir: Path) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    from memlens.lab.demo import leak_by_group
    from memlens.leakage import calibrate

    attack = json.loads((out_dir / "results.json").read_text()).get("leak_threshold", {}).get("attack", "informia_token")
    t = pq.read_table(out_dir / "token_scores.parquet", columns=["id", "label", "span_start", "span_end", f"{attack}_token"]).to_pydict()
    meta = {r["id"]: r.get("meta") or {} for r in map(json.loads, (out_dir / "texts.jsonl").read_text().splitlines())}
    scores = pd.read_csv(out_dir / "scores.csv", dtype={"id": str}).set_index("id")
    ids, labels = [str(i) for i in t["id"]], list(t["label"])
    toks = [np.asarray(x, dtype=np.float32).astype(np.float64) for x in t[f"{attack}_token"]]  # as the audit calibrates
    lt = calibrate(toks, labels, ids, attack=attack)  # as the audit does (a demo always has non-members)
    tiers = [None if y == 0 else int(scores.loc[i, "tier"]) for i, y in zip(ids, labels)]
    groups = leak_by_group(toks, t["span_start"], t["span_end"], [meta[i].get("pii") or [] for i in ids], ids, labels, tiers, lt)
    return {"token_threshold_bits": lt["value"], "token_rate": lt["rate"], "text_rate": lt["text"].get("rate"),
            "n_nonmember_texts": labels.count(0), "flagged_nonmembers": lt["text"]["flagged"]["non-members"][0], "groups": groups}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="a demo's output directory (results.json, scores.csv, texts.jsonl, token_scores.parquet)")
    ap.add_argument("--into", type=Path, default=None, help="a demo result file to store the numbers in as demo.leakage")
    a = ap.parse_args(argv)
    res = recompute(a.out_dir)
    print(json.dumps(res, indent=1))
    if a.into:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True).stdout.strip()
        doc = json.loads(a.into.read_text())
        doc["demo"]["leakage"] = {**res, "how": f"recomputed from the run's saved token scores by benchmarks/demo_leakage.py at {sha}"}
        a.into.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
