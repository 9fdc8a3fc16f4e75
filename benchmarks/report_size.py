"""Size and open time of the HTML report for a 1,000-text audit.

Builds a synthetic saved audit (1,000 texts of ~150 tokens, 8 attacks, token scores), writes
report.html, prints its size, then opens it from a file:// URL in headless Chromium (Debian's
/usr/bin/chromium through Playwright) and prints the time until the token view is rendered.

    python benchmarks/report_size.py [--texts 1000] [--tokens 150]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from memlens.report import write_report_from_dir

ATTACKS = ["loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token"]
WORDS = "the of and a to in is was he for it with as his on be at by i this had not are but from or have an they".split()


def synthetic_audit(d: Path, n: int, n_tok: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    rows, texts, toks = [], [], []
    for i in range(n):
        words = [str(rng.choice(WORDS)) for _ in range(n_tok)]
        text = " ".join(words)
        starts, pos = [], 0
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        starts = np.array(starts)
        ends = starts + np.array([len(w) for w in words])
        tid = f"t{i:04d}"
        pii = [{"type": "phone", "start": int(starts[5]), "end": int(ends[7])}]
        texts.append({"id": tid, "text": text, "label": int(labels[i]), "meta": {"tier": int(rng.choice([1, 4, 16])), "pii": pii}})
        rows.append({"id": tid, "label": int(labels[i]), **{a: float(rng.normal(labels[i], 1)) for a in ATTACKS}})
        lp = rng.normal(-3, 1, n_tok).astype(np.float32)
        toks.append({"id": tid, "label": int(labels[i]), "token_ids": rng.integers(0, 50000, n_tok), "tokens": words,
                     "span_start": starts, "span_end": ends, "target_logprob": lp,
                     "reference_logprob": lp - rng.normal(0, 1, n_tok).astype(np.float32),
                     "informia_token_token": rng.normal(0.5, 2, n_tok).astype(np.float32),
                     "minkpp_token": rng.normal(0, 1, n_tok).astype(np.float32)})
    pd.DataFrame(rows).to_csv(d / "scores.csv", index=False)
    with open(d / "texts.jsonl", "w") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    pq.write_table(pa.Table.from_pylist(toks), d / "token_scores.parquet")
    y = labels
    metrics = {}
    from memlens.metrics import evaluate

    for a in ATTACKS:
        metrics[a] = evaluate(y, np.array([r[a] for r in rows]), n_bootstrap=50).to_dict()
    (d / "results.json").write_text(json.dumps({"memlens_version": "bench", "settings": {"attacks": ATTACKS, "seed": 0,
                                                "n_population": 0, "target": {"name": "synthetic"}, "references": []},
                                                "metrics": metrics, "notes": []}))


def open_time(path: Path, runs: int = 3) -> list[float]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"]
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for _ in range(runs):
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector("#tokens .tok")
            page.wait_for_selector("#textsTable tbody tr")
            out.append(time.perf_counter() - t0)
            page.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=150)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        synthetic_audit(d, a.texts, a.tokens)
        t0 = time.perf_counter()
        path = write_report_from_dir(d)
        build_s = time.perf_counter() - t0
        size = path.stat().st_size
        times = open_time(path)
        print(f"texts: {a.texts}, tokens per text: {a.tokens}")
        print(f"report.html: {size / 1e6:.2f} MB (limit 20 MB), built in {build_s:.1f} s")
        print(f"open until rendered in headless Chromium: {', '.join(f'{t:.2f}' for t in times)} s (limit 3 s)")


if __name__ == "__main__":
    main()
