"""Cost of the LT-MIA paired reduction next to the informia one, eager and compiled.

    python benchmarks/ltmia_reduction.py --vocab 50257 --rows 1024 --device cuda

Checks that the compiled reduction (what CausalScorer uses on GPUs) matches the eager one and
prints milliseconds per chunk of ``rows`` positions.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from memlens.models.reductions import pair_reductions


def bench(fn, *args, reps=10, **kw):
    fn(*args, **kw)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        out = fn(*args, **kw)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    g = torch.Generator(device=a.device).manual_seed(0)
    dt = getattr(torch, a.dtype)
    lt = (torch.randn(a.rows, a.vocab, device=a.device, generator=g) * 3).to(dt)
    lr = (torch.randn(a.rows, a.vocab, device=a.device, generator=g) * 3).to(dt)
    tgt = torch.randint(0, a.vocab, (a.rows,), device=a.device, generator=g)
    res = {"vocab": a.vocab, "rows": a.rows, "k": a.k, "device": a.device, "dtype": a.dtype}
    if a.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    s = dict(ltmia_k=a.k)
    res["informia_ms"], _ = bench(pair_reductions, lt, lr, tgt, ("informia",))
    res["informia+ltmia_ms"], eager = bench(pair_reductions, lt, lr, tgt, ("informia", "ltmia"), **s)
    if a.compile:
        fn = torch.compile(pair_reductions)
        t = time.perf_counter()
        fn(lt, [lr], tgt, ("informia", "ltmia"), 1.0, **s)
        res["compile_s"] = round(time.perf_counter() - t, 1)
        res["compiled_informia+ltmia_ms"], comp = bench(fn, lt, [lr], tgt, ("informia", "ltmia"), 1.0, **s)
        res["compiled_max_abs_diff"] = {k: float((comp[k].float() - eager[k].float()).abs().max()) for k in eager}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
