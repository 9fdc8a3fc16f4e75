"""InfoRMIA's claim on the PII testbed: 1 base reference vs 4 split references (online, offline, tuned a), several seeds.

    # GPU (the default testbed; seeds in parallel processes sharing the GPU)
    python benchmarks/informia_claim.py --seeds 0 1 2 --device cuda --jobs 3 --out benchmarks/results/informia_claim
    # CPU smoke run (the quick testbed)
    python benchmarks/informia_claim.py --seeds 0 --quick --out out/informia_claim

Writes OUT/seed{s}.json per seed, OUT/informia_claim.md (tables: mean ± sd over seeds) and
OUT/informia_claim.json (combined numbers, machine, commit). Trained models are reused when present
(OUT/seed{s}/testbed), so a run that was cut off continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def machine(device: str) -> dict:
    import torch

    m = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
         "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name(0)
    return m


def commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _one(kw: dict) -> dict:
    from memlens.lab.informia_claim import run_seed

    return run_seed(**kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="the quick testbed (TestbedConfig.quick)")
    ap.add_argument("--tiny", action="store_true", help="the tiny size of the CPU test (implies --quick)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run as parallel processes")
    ap.add_argument("--k", type=int, default=4, help="split references (even)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="split references repeat every IN text N times [default: members by their true tier, non-members by a drawn tier]")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="TestbedConfig overrides, e.g. n_nonmembers=1000 n_population=1000 (TPR at 0.1%% FPR needs 1000 non-members)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per seed [default: CPU cores / jobs]")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(argv)
    from memlens.lab.informia_claim import TINY, combine, markdown

    size = dict(TINY) if a.tiny else {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            size[k] = json.loads(v)
        except json.JSONDecodeError:
            size[k] = v
    t0, sha = time.perf_counter(), commit()  # the code that runs, not what HEAD is when it ends
    threads = a.threads or max(1, (os.cpu_count() or 1) // max(1, a.jobs))
    kws = [dict(out_dir=a.out, seed=s, quick=a.quick or a.tiny, size=size or None, device=a.device, k=a.k,
                n_bootstrap=a.bootstrap, progress=a.progress, num_threads=threads, repeats=a.repeats) for s in a.seeds]
    if a.jobs > 1 and len(kws) > 1:
        import multiprocessing as mp

        # spawn: CUDA cannot be used in a forked child
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=mp.get_context("spawn")) as ex:
            docs = list(ex.map(_one, kws))
    else:
        docs = [_one(kw) for kw in kws]
    combined = combine(docs)
    md = markdown(docs, combined)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "informia_claim.md").write_text(md)
    (a.out / "informia_claim.json").write_text(json.dumps(
        {"seeds": a.seeds, "quick": a.quick or a.tiny, "tiny": a.tiny, "k": a.k, "repeats": a.repeats or "true tier",
         "machine": machine(a.device), "commit": sha,
         "seconds": round(time.perf_counter() - t0, 1), "combined": combined,
         "per_seed": {d["seed"]: {"timings": d["timings"], "info": d["info"]} for d in docs}}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
