"""Peak memory of ``memlens audit`` against the number of texts (does it grow with the dataset?).

Builds the tiny random-weight models of benchmarks/audit_e2e.py and N texts for each N given,
runs ``memlens audit --attacks all`` in a fresh process per run (cold: empty cache; warm: the same
command again, nothing to score) and prints each run's peak resident memory (the child's own
VmHWM, benchmarks/_peak_rss.py) and wall time. ``--src`` runs another checkout's code (e.g. the main
branch's ``src``) for a before/after comparison on the same models, texts and cache.

    python benchmarks/audit_memory.py --texts 2000 8000 --tokens 64
    python benchmarks/audit_memory.py --texts 2000 8000 --tokens 64 --src /work/main/src --work /tmp/mem
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak_rss import run_measured  # noqa: E402
from audit_e2e import build_models, make_texts, write_jsonl  # noqa: E402


def run(src: Path, work: Path, target: Path, reference: Path, n: int, tag: str, extra: list[str]) -> dict:
    d = work / f"n{n}"
    out = d / f"out-{tag}"
    argv = [sys.executable, "-m", "memlens.cli", "audit", "--target", str(target), "--reference", str(reference),
            "--members", str(d / "members.jsonl"), "--nonmembers", str(d / "nonmembers.jsonl"),
            "--population", str(d / "population.jsonl"), "--attacks", "all", "--device", "cpu",
            "--cache-dir", str(d / "cache"), "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = run_measured(argv, env=env)
    if r["returncode"] != 0:
        sys.stderr.write(r["stderr"][-3000:])
        raise SystemExit(f"memlens audit failed ({r['returncode']})")
    res = json.loads((out / "results.json").read_text())
    return {"texts": n, "run": tag, "src": str(src), "peak_rss_mb": r["peak_rss_mb"], "peak_rss_how": r["peak_rss_how"],
            "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "timings": res.get("timings", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="the memlens source tree to run")
    ap.add_argument("--runs", default="cold,warm", help="cold (empty cache), warm (cache filled by an earlier run)")
    ap.add_argument("--audit-args", default="", help="extra arguments for memlens audit")
    ap.add_argument("--work", default="/tmp/memlens-audit-memory")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    rows = []
    for n in a.texts:
        d = work / f"n{n}"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "members.jsonl").exists():
            texts = make_texts(n + a.population, a.tokens, seed=0)
            write_jsonl(d / "members.jsonl", texts[: n // 2], "m")
            write_jsonl(d / "nonmembers.jsonl", texts[n // 2:n], "n")
            write_jsonl(d / "population.jsonl", texts[n:], "p")
        if not (work / "models" / "target").exists():
            build_models(work / "models", "tiny", None, make_texts(2000, a.tokens, seed=0))
        for tag in a.runs.split(","):
            r = run(Path(a.src), work, work / "models" / "target", work / "models" / "reference", n, tag, a.audit_args.split())
            rows.append(r)
            print(f"{n:>7} texts {tag:<5} peak RSS {r['peak_rss_mb']:8.0f} MB  wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s"
                  f"  ({a.src})", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
