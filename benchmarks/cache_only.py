"""What a user waits for once the statistics are cached: ``memlens attack`` (new attack parameters on
the cache, no model) at 20,000 texts, and ``memlens show`` of one text of a 100,000-text audit.

attack: builds the tiny random-weight models of benchmarks/audit_e2e.py and N texts (+ population),
runs the real ``memlens audit`` on a handful of them so the cache namespaces exist with their real
keys, then fills those namespaces for every text with statistics of the right shape (the texts' real
tokens and spans, random log-probabilities and ranks: the attack path's speed does not depend on the
values) instead of running the model over all N texts, which takes an hour on a small CPU. Then it
times ``memlens attack --attacks all`` in a fresh process (wall and CPU seconds, stage timings),
with and without the report.

show: saves a synthetic N-text audit (memlens.report._synthetic, no report) and times
``memlens show ID`` in a fresh process and ``show_text`` in this one.

    python benchmarks/cache_only.py attack --texts 20000 --population 1000
    python benchmarks/cache_only.py show --texts 100000
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak_rss import run_measured  # noqa: E402
from audit_e2e import build_models, make_texts, write_jsonl  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def timed(argv: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-3000:])
        raise SystemExit(f"{argv[3]} failed ({proc.returncode})")
    return {"wall_s": time.perf_counter() - t0}


def fill_cache(cache: Path, texts: list[str], tokenizer_dir: Path, seed: int = 0) -> int:
    """Put statistics of every text into every namespace under ``cache`` that lacks them."""
    from transformers import AutoTokenizer

    from memlens.cache import CacheNamespace, key_hash, text_hash
    from memlens.models.causal import tokenize_many

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    toks = tokenize_many(tok, texts)
    hashes = [text_hash(t) for t in texts]
    rng = np.random.default_rng(seed)
    added = 0
    for d in sorted(p for p in cache.iterdir() if (p / "key.json").is_file()):  # namespaces (not the blind baseline's folder)
        key = json.loads((d / "key.json").read_text())
        assert key_hash(key) == d.name, "key.json does not give its namespace's name"
        ns = CacheNamespace(cache, key)
        missing = set(ns.missing(hashes))
        batch = {}
        for h, tk in zip(hashes, toks):
            if h not in missing:
                continue
            n = len(tk.ids) - 1
            if key["kind"] == "causal-pair":
                rec = {"log_ratio": rng.normal(0, 1, n).astype(np.float32), "kl_ref_target": rng.exponential(0.5, n).astype(np.float32)}
            else:
                spans = np.asarray(tk.spans, dtype=np.int64).reshape(-1, 2)
                lp = -rng.exponential(3.0, n).astype(np.float32)
                rec = {"token_ids": np.asarray(tk.ids[1:], dtype=np.int64), "span_start": spans[:, 0], "span_end": spans[:, 1],
                       "logprob": lp, "entropy": rng.exponential(3.0, n).astype(np.float32),
                       "mean_logp": (lp - rng.normal(0, 1, n)).astype(np.float32), "std_logp": rng.exponential(1.0, n).astype(np.float32),
                       "rank": rng.integers(0, 100, n).astype(np.int64)}
            batch[h] = rec
            missing.discard(h)
            if len(batch) == 1024:
                ns.put(batch)
                added += len(batch)
                batch = {}
        ns.put(batch)
        added += len(batch)
    return added


def attack_bench(a) -> dict:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    texts = make_texts(a.texts + a.population, a.tokens, seed=0)
    audited, pop = texts[:a.texts], texts[a.texts:]
    if not (work / "models" / "target").exists():
        build_models(work / "models", "tiny", None, texts[:5000])
    common = ["--target", str(work / "models" / "target"), "--reference", str(work / "models" / "reference"),
              "--attacks", "all", "--cache-dir", str(work / "cache")]
    # the real pass on a few texts: the namespaces, with the keys `memlens audit` uses
    write_jsonl(work / "seed-m.jsonl", audited[:4], "m")
    write_jsonl(work / "seed-n.jsonl", audited[4:8], "n")
    write_jsonl(work / "seed-p.jsonl", pop[:4], "p")
    timed([sys.executable, "-m", "memlens.cli", "audit", *common, "--members", str(work / "seed-m.jsonl"), "--nonmembers",
           str(work / "seed-n.jsonl"), "--population", str(work / "seed-p.jsonl"), "--device", "cpu", "--bootstrap", "0",
           "--no-report", "--out", str(work / "seed-out")])
    t0 = time.perf_counter()
    added = fill_cache(work / "cache", audited + pop, work / "models" / "target")
    fill_s = time.perf_counter() - t0
    write_jsonl(work / "members.jsonl", audited[: a.texts // 2], "m")
    write_jsonl(work / "nonmembers.jsonl", audited[a.texts // 2:], "n")
    write_jsonl(work / "population.jsonl", pop, "p")
    data = ["--members", str(work / "members.jsonl"), "--nonmembers", str(work / "nonmembers.jsonl"),
            "--population", str(work / "population.jsonl")]
    res = {"texts": a.texts, "population": a.population, "filled": added, "fill_s": fill_s}
    for tag, extra in (("no report", ["--no-report"]), ("with report", [])):
        out = work / f"out-{tag.replace(' ', '-')}"
        r = timed_usage([sys.executable, "-m", "memlens.cli", "attack", *common, *data, "--out", str(out), *extra])
        r["timings"] = json.loads((out / "results.json").read_text())["timings"]
        res[tag] = r
        print(f"memlens attack, {a.texts} texts + {a.population} population, {tag}: wall {r['wall_s']:.1f} s, "
              f"cpu {r['cpu_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        for stage, s in r["timings"].items():
            print(f"    {stage:<66}{s:7.2f} s")
    return res


def timed_usage(argv: list[str]) -> dict:
    r = run_measured(argv, env=ENV)
    if r["returncode"]:
        sys.stderr.write(r["stderr"][-3000:])
        raise SystemExit(f"{argv[3]} failed ({r['returncode']})")
    return {k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "peak_rss_how")}


def show_bench(a) -> dict:
    from rich.console import Console

    from memlens.report import show_text
    from memlens.report._synthetic import synthetic_result

    work = Path(a.work)
    d = work / f"synthetic-{a.texts}"
    if not (d / "results.json").exists():
        t0 = time.perf_counter()
        result = synthetic_result(a.texts, (100, 200), seed=0, n_bootstrap=0)
        result.save(d)
        print(f"synthetic {a.texts}-text audit saved in {time.perf_counter() - t0:.1f} s")
    tid = f"t{a.texts - 1:04d}"
    res = {"texts": a.texts}
    r = timed_usage([sys.executable, "-m", "memlens.cli", "show", tid, "--results", str(d)])
    res["cli"] = r
    t0 = time.perf_counter()
    show_text(d, tid, console=Console(file=io.StringIO()))
    res["in_process_s"] = time.perf_counter() - t0
    print(f"memlens show of one text of {a.texts}: fresh process wall {r['wall_s']:.2f} s (cpu {r['cpu_s']:.2f} s, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB); show_text in process {res['in_process_s']:.2f} s")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["attack", "show"])
    ap.add_argument("--texts", type=int, default=None, help="default: 20000 for attack, 100000 for show")
    ap.add_argument("--population", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=276)
    ap.add_argument("--work", default="/tmp/memlens-cache-only")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    a.texts = a.texts or (20000 if a.what == "attack" else 100000)
    res = attack_bench(a) if a.what == "attack" else show_bench(a)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
