"""Throughput of the statistics pass against a naive loop and a bare forward pass.

Three ways to get the same per-token statistics (log p, entropy, mu, sigma, rank) on the same
model and token sequences (random weights and random tokens: speed does not depend on them):
  naive   one text at a time, full-vocabulary log-softmax in float32 (as MIMIR does)
  bare    batched forward pass, logits computed, nothing else: the ceiling
  memlens CausalScorer: length-bucketed batches, vocabulary reductions in bounded row chunks

    python benchmarks/throughput.py --model pythia-160m --texts 512 --tokens 256 --device cuda
    python benchmarks/throughput.py --model tiny --texts 64 --tokens 128 --device cpu

Prints tokens/s for each and the ratios.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from memlens.models.causal import CausalScorer, Tokenized
from memlens.passes.causal import PassSettings

CONFIGS = {
    # GPT-NeoX (Pythia) shapes; weights are random.
    "pythia-160m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "pythia-410m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "pythia-1.4b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512),
}


class _Tok:
    """Just enough of a tokenizer for the scorer: the ids come pre-tokenized."""

    bos_token_id = 0
    eos_token_id = 0
    pad_token_id = 0
    model_max_length = 2048


def build_model(name: str, device: str, dtype: torch.dtype, vocab: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=vocab, max_position_embeddings=2048, rotary_pct=0.25, **CONFIGS[name])
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def naive(model, seqs: list[list[int]], device: str) -> float:
    t0 = time.perf_counter()
    for s in seqs:
        ids = torch.tensor([s], device=device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1)
        p = logp.exp()
        tgt = ids[0, 1:]
        lp = logp.gather(-1, tgt[:, None])
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
        rank = (logp > lp).sum(-1) + 1
        _ = [x.cpu() for x in (lp, mu, sigma, rank)]
    sync(device)
    return time.perf_counter() - t0


@torch.inference_mode()
def bare(model, seqs: list[list[int]], device: str, batch_size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(seqs), batch_size):
        ids = torch.tensor(seqs[i:i + batch_size], device=device)
        _ = model(input_ids=ids).logits
    sync(device)
    return time.perf_counter() - t0


def ours(model, seqs: list[list[int]], device: str, batch_size: int, chunk: int, compile_reductions: bool | None = None) -> float:
    scorer = CausalScorer([model], _Tok(), batch_size=batch_size, vocab_chunk_rows=chunk, progress=False,
                          compile_reductions=compile_reductions)
    toks = [Tokenized(s, [(0, 0)] * (len(s) - 1), 1) for s in seqs]
    t0 = time.perf_counter()
    scorer.score_tokenized(toks)
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", choices=sorted(CONFIGS))
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--naive-texts", type=int, default=None, help="texts for the naive loop (default: all)")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto = bf16 on GPU, fp32 on CPU")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=PassSettings.vocab_chunk_rows,
                    help="rows per vocabulary-reduction chunk (default: the pipeline's)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of the batched passes (median)")
    ap.add_argument("--compile", default="auto", choices=("auto", "yes", "no"), help="torch.compile the reductions (auto: on GPU)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    a = ap.parse_args()
    dtype = {"auto": torch.bfloat16 if a.device.startswith("cuda") else torch.float32, "bf16": torch.bfloat16,
             "fp32": torch.float32}[a.dtype]
    comp = {"auto": None, "yes": True, "no": False}[a.compile]
    bs = a.batch_size or (64 if a.device.startswith("cuda") else 8)
    rng = np.random.default_rng(0)
    seqs = [[0] + rng.integers(1, a.vocab, a.tokens - 1).tolist() for _ in range(a.texts)]
    n_tok = sum(len(s) - 1 for s in seqs)
    model = build_model(a.model, a.device, dtype, a.vocab)
    # warm-up (kernels, allocator), not timed
    bare(model, seqs[:bs], a.device, bs)
    ours(model, seqs[:bs], a.device, bs, a.chunk, comp)
    naive(model, seqs[:2], a.device)
    nseqs = seqs[: a.naive_texts] if a.naive_texts else seqs
    t_naive = naive(model, nseqs, a.device)
    # median of a few repetitions: one pass of a small model over the default texts takes well
    # under a second on a GPU
    t_bare = float(np.median([bare(model, seqs, a.device, bs) for _ in range(a.repeat)]))
    t_ours = float(np.median([ours(model, seqs, a.device, bs, a.chunk, comp) for _ in range(a.repeat)]))
    res = {
        "model": a.model, "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "dtype": str(dtype), "texts": a.texts, "tokens_per_text": a.tokens, "batch_size": bs, "chunk": a.chunk, "compile": a.compile,
        "repeat": a.repeat,
        "naive_tok_s": sum(len(s) - 1 for s in nseqs) / t_naive, "bare_forward_tok_s": n_tok / t_bare, "memlens_tok_s": n_tok / t_ours,
    }
    res["memlens_vs_naive"] = res["memlens_tok_s"] / res["naive_tok_s"]
    res["memlens_vs_bare"] = res["memlens_tok_s"] / res["bare_forward_tok_s"]
    for k, v in res.items():
        print(f"{k:>20}: {v:,.3f}" if isinstance(v, float) else f"{k:>20}: {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
