"""What users wait for: the whole ``memlens audit`` against the bare paired forward pass.

Builds random-weight target and reference models of a real shape (speed does not depend on the
weights), N unique English texts of about ``--tokens`` tokens (CPython's own documentation
prose, recombined), then measures in one run:

  bare     both models' batched forward (bf16 on GPU, padded batches of --bare-batch): the ceiling
  naive    a MIMIR-style loop (one text at a time, fp32 log-softmax, both models), extrapolated
  audit    ``memlens audit --attacks all`` as a user runs it (a subprocess; under torchrun with
           --nproc > 1), from an empty cache; then again from the warm cache
and prints each stage's time (from results.json's ``timings``) and the audit's peak memory.

    python benchmarks/audit_e2e.py --shape smollm2-135m --texts 20000 --population 1000 --device cuda
    python benchmarks/audit_e2e.py --shape llama-1b --texts 20000 --population 1000 --device cuda
    python benchmarks/audit_e2e.py --shape smollm2-135m --texts 16000 --population 1000 --nproc 2 --device cuda
    python benchmarks/audit_e2e.py --shape tiny --texts 200 --population 50 --device cpu      # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak_rss import run_measured  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # as the CLI sets it (memlens.cli._common.setup)

# Llama-architecture shapes (random weights). SmolLM2-135M: 576 wide, 30 layers, 9 heads (3 KV),
# vocabulary 49,152; Llama-3.2-1B: 2,048 wide, 16 layers, 32 heads (8 KV), vocabulary 128,256.
SHAPES = {
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=4096, tie_word_embeddings=True),
}


def make_texts(n: int, tokens: int, seed: int) -> list[str]:
    """n distinct texts of about ``tokens`` tokens (~0.75 words a token) from CPython's prose."""
    from memlens.testbed.corpus import stdlib_prose

    words = " ".join(stdlib_prose()).split()
    rng = random.Random(seed)
    n_words = max(8, int(tokens * 0.75))
    positions = max(1, len(words) - n_words)
    # one run of words per text gives at most `positions` distinct texts (~29k): beyond 80% of that (e.g. the
    # 100,000 texts of a memory run), each text joins two runs of half the length instead (the texts of
    # smaller runs are unchanged)
    two = n > 0.8 * positions
    half = n_words // 2
    out, seen = [], set()
    while len(out) < n:
        i = rng.randrange(0, positions)
        if two:
            j = rng.randrange(0, positions)
            text = " ".join(words[i:i + half] + words[j:j + n_words - half])
        else:
            text = " ".join(words[i:i + n_words])
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def build_models(root: Path, shape: str, tokenizer_dir: str | None, texts: list[str]) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tokenizer_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        from memlens.testbed.train import train_tokenizer

        tok = train_tokenizer(texts[:5000], min(SHAPES[shape]["vocab_size"], 8192), 2048)
    paths = []
    for name, seed in (("target", 0), ("reference", 1)):
        torch.manual_seed(seed)
        cfg = LlamaConfig(max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          **SHAPES[shape])
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths.append(root / name)
        del model
    return paths[0], paths[1]


def write_jsonl(path: Path, texts: list[str], prefix: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n")


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_forward(target: Path, reference: Path, texts: list[str], device: str, batch: int) -> dict:
    """Both models' forward on padded batches, logits produced and dropped: nothing else."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tok = AutoTokenizer.from_pretrained(target)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    models = [AutoModelForCausalLM.from_pretrained(p, dtype=dtype).to(device).eval() for p in (target, reference)]
    t0 = time.perf_counter()
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    t_tok = time.perf_counter() - t0
    n_tokens = sum(len(e) for e in enc)

    def run(seqs) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(seqs), batch):
                chunk = seqs[i:i + batch]
                width = max(len(s) for s in chunk)
                ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for j, s in enumerate(chunk):
                    ids[j, :len(s)] = torch.tensor(s)
                    mask[j, :len(s)] = 1
                ids, mask = ids.to(device), mask.to(device)
                for m in models:
                    m(input_ids=ids, attention_mask=mask).logits
        sync(device)
        return time.perf_counter() - t

    run(enc[:batch])  # warm-up
    t = run(enc)
    models.clear()  # free the GPU memory for the audit that follows
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"seconds": t, "tokenize_s": t_tok, "tokens": n_tokens, "tok_per_s": n_tokens / t}


def naive_loop(target: Path, reference: Path, texts: list[str], device: str, n_total: int) -> dict:
    """MIMIR-style: one text at a time, full fp32 log-softmax of both models; extrapolated to n_total."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tok = AutoTokenizer.from_pretrained(target)
    models = [AutoModelForCausalLM.from_pretrained(p, dtype=dtype).to(device).eval() for p in (target, reference)]
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"].to(device)
            for m in models:
                logp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].float(), -1)
                lp = logp.gather(-1, ids[0, 1:, None])
                p = logp.exp()
                mu = (p * logp).sum(-1)
                _ = [x.cpu() for x in (lp, mu, ((p * logp.square()).sum(-1) - mu.square()).sqrt(), (logp > lp).sum(-1))]
    sync(device)
    t = time.perf_counter() - t0
    del models
    return {"texts_timed": len(texts), "seconds_timed": t, "seconds_extrapolated": t * n_total / len(texts)}


def run_audit(work: Path, target: Path, reference: Path, device: str, nproc: int, extra: list[str], tag: str) -> dict:
    out = work / f"out-{tag}"
    cmd = ["--target", str(target), "--reference", str(reference), "--members", str(work / "members.jsonl"),
           "--nonmembers", str(work / "nonmembers.jsonl"), "--attacks", "all", "--device", device,
           "--cache-dir", str(work / "cache"), "--out", str(out), *extra]
    if nproc > 1:
        argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "-m", "memlens.cli", "audit", *cmd]
    else:
        argv = [sys.executable, "-m", "memlens.cli", "audit", *cmd]
    if (work / "population.jsonl").exists():
        argv += ["--population", str(work / "population.jsonl")]
    r = run_measured(argv)
    if r["returncode"] != 0:
        sys.stderr.write(r["stdout"][-4000:] + r["stderr"][-4000:])
        raise SystemExit(f"memlens audit failed ({r['returncode']})")
    results = json.loads((out / "results.json").read_text())
    # the largest of the audit's processes (torchrun's workers too), measured in them (benchmarks/_peak_rss.py)
    return {"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "peak_rss_how": r["peak_rss_how"],
            "timings": results.get("timings", {}),
            "auc": {k: v.get("auc") for k, v in results.get("metrics", {}).items()},
            "report_mb": (out / "report.html").stat().st_size / 1e6 if (out / "report.html").exists() else None}


def bytecode_caches(work: Path) -> str:
    """Let the audit's processes use compiled bytecode, as an installed package does (pip writes the .pyc).

    A Python that writes no bytecode (``PYTHONDONTWRITEBYTECODE``, as on the lent GPU machines) compiles
    torch's and transformers' sources again in every new process: ~14 s of a cold audit that a user never
    waits for. Then the caches go to a folder of their own (``PYTHONPYCACHEPREFIX``: site-packages may be
    read-only) and one import of the audit's modules fills them (and matplotlib's font cache) before any
    timing. Returns what was done, for the results."""
    if not (sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE")):
        return "as found (this Python writes bytecode caches)"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    warm = ("import memlens.cli.main, memlens.audit, memlens.report, memlens.models.causal, sklearn.metrics, "
            "matplotlib.figure, matplotlib.font_manager; from transformers import AutoTokenizer, AutoModelForCausalLM")
    subprocess.run([sys.executable, "-c", warm], check=True)
    return f"filled first: this Python writes none (PYTHONDONTWRITEBYTECODE), so PYTHONPYCACHEPREFIX={work / 'pycache'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--texts", type=int, default=200, help="audited texts (half labelled members)")
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=276, help="approximate tokens per text")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for the audit under torchrun")
    ap.add_argument("--bare-batch", type=int, default=64)
    ap.add_argument("--naive-texts", type=int, default=64)
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: a byte-level BPE trained on the texts)")
    ap.add_argument("--audit-args", default="", help="extra arguments for memlens audit, e.g. '--bootstrap 0 --no-report'")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    a = ap.parse_args()

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="memlens-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = make_texts(a.texts + a.population, a.tokens, seed=0)
    audited, pop = texts[:a.texts], texts[a.texts:]
    write_jsonl(work / "members.jsonl", audited[: a.texts // 2], "m")
    write_jsonl(work / "nonmembers.jsonl", audited[a.texts // 2:], "n")
    if pop:
        write_jsonl(work / "population.jsonl", pop, "p")
    t0 = time.perf_counter()
    target, reference = build_models(work / "models", a.shape, a.tokenizer, texts)
    res: dict = {"shape": a.shape, "texts": a.texts, "population": a.population, "nproc": a.nproc, "device": a.device,
                 "build_models_s": time.perf_counter() - t0, "python": platform.python_version(),
                 "bytecode_caches": bytecode_caches(work)}
    try:
        import torch

        res["gpu"] = torch.cuda.get_device_name() if a.device.startswith("cuda") else None
        res["torch"] = torch.__version__
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    all_texts = audited + pop
    res["bare"] = bare_forward(target, reference, all_texts, a.device, a.bare_batch)
    res["naive"] = naive_loop(target, reference, all_texts[: a.naive_texts], a.device, len(all_texts))
    extra = a.audit_args.split()
    res["audit_cold"] = run_audit(work, target, reference, a.device, a.nproc, extra, "cold")
    res["audit_warm"] = run_audit(work, target, reference, a.device, a.nproc, extra, "warm")
    bare_s = res["bare"]["seconds"]
    res["audit_cold_vs_bare"] = res["audit_cold"]["wall_s"] / bare_s
    res["tokens"] = res["bare"]["tokens"]
    print(f"shape {a.shape}, {a.texts} texts + {a.population} population, {res['tokens']:,} tokens, nproc {a.nproc}, "
          f"{res.get('gpu') or a.device}")
    print(f"  bare paired forward     {bare_s:8.1f} s  ({res['bare']['tok_per_s']:,.0f} tok/s; "
          f"tokenizing {res['bare']['tokenize_s']:.1f} s)")
    print(f"  naive loop (extrap.)    {res['naive']['seconds_extrapolated']:8.1f} s  (from {a.naive_texts} texts)")
    for tag in ("cold", "warm"):
        r = res[f"audit_{tag}"]
        print(f"  memlens audit, {tag:<5}   {r['wall_s']:8.1f} s  ({r['wall_s'] / bare_s:.2f}x bare), "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB, report {r['report_mb'] or 0:.1f} MB")
        # every stage the audit recorded, in its order; stages whose names say "background", "overlap", "beside"
        # or "concurrently" ran at the same time as others: their seconds are not to be added up
        for stage, s in r["timings"].items():
            print(f"      {stage:<66}{s:8.2f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
