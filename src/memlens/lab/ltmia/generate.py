"""LT-MIA training data: many fine-tuning runs whose membership is known by construction.

For each architecture family (and model size) a *base* is pretrained from scratch on a corpus
mixing every domain. For each (base, domain, replicate) a *run* draws members, non-members and
a population from that domain's held-out pool, fine-tunes a copy of the base on the members for
a few epochs (the *target*), and scores members, non-members and population in one paired pass
(target and base on the same batch). From that pass alone it keeps:

* LT-MIA's per-token features of every member and non-member (:mod:`memlens.ltmia.features`);
* the baseline attacks' scores (loss, zlib, mink, minkpp, ref, rmia, informia, informia_token),
  computed by the registered attacks from the same statistics, so ``memlens ltmia eval``
  compares everything on the same held-out runs.

Output directory::

    config.json  corpus/<domain>.jsonl  tokenizer/  bases/<base>/
    runs/<run>.features.npy   float16 [n, max_tokens, 7k+14] (zero padded)
    runs/<run>.parquet        one row per text: run, family, kind, domain, label, length, scores
    runs/<run>.json           the run's settings, training summary and timings (written last)
    samples.parquet           all runs' rows;  manifest.json

Each run's files are written atomically and the ``.json`` last, so an interrupted generation
resumes with the runs that are missing. Bases are saved once pretrained.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from memlens.lab.ltmia.families import FAMILIES, FAMILY_KIND, ModelSize
from memlens.ltmia.features import LTMIAError

log = logging.getLogger("memlens")

BASELINES = ("loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token")


@dataclass
class GenerateConfig:
    """Everything that determines a generated data set. Presets: :meth:`preset` ("tiny", "small", "large")."""

    name: str = "small"
    seed: int = 0
    families: tuple[str, ...] = ("gpt2", "llama", "gptneox", "mamba")
    domains: tuple[str, ...] = ("docs", "code", "pii", "web")
    sizes: tuple[ModelSize, ...] = (ModelSize(96, 2, 4, 256),)
    # per-family overrides of ``sizes`` and ``replicates`` (the recurrent families run a Python
    # loop over positions without their CUDA kernels: they get fewer layers / runs in "large")
    family_sizes: dict[str, tuple[ModelSize, ...]] = field(default_factory=dict)
    family_replicates: dict[str, int] = field(default_factory=dict)
    vocab_size: int = 2048
    max_tokens: int = 64  # scored tokens kept per text (texts are cut to this many tokens)
    min_tokens: int = 12
    pretrain_per_domain: int = 600
    pool_per_domain: int = 400  # held-out texts per domain that runs draw from
    members: int = 100
    nonmembers: int = 100
    population: int = 50
    replicates: int = 1
    pretrain_epochs: int = 3
    pretrain_lr: float = 2e-3
    pretrain_batch: int = 32
    finetune_epochs: tuple[int, ...] = (2, 3, 4)
    finetune_lr: tuple[float, float] = (3e-4, 1.5e-3)  # log-uniform range
    finetune_batch: int = 16
    k: int = 20
    space: str = "logprob"
    code_packages: tuple[str, ...] = ("transformers",)
    score_batch: int = 32

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        self.domains = tuple(self.domains)
        self.sizes = tuple(s if isinstance(s, ModelSize) else ModelSize(**s) for s in self.sizes)
        self.family_sizes = {f: tuple(s if isinstance(s, ModelSize) else ModelSize(**s) for s in v)
                             for f, v in dict(self.family_sizes).items()}
        self.family_replicates = {f: int(v) for f, v in dict(self.family_replicates).items()}
        self.finetune_epochs = tuple(int(e) for e in self.finetune_epochs)
        self.finetune_lr = tuple(float(x) for x in self.finetune_lr)  # type: ignore[assignment]
        self.code_packages = tuple(self.code_packages)
        bad = set(self.families) - set(FAMILIES)
        if bad:
            raise LTMIAError(f"unknown families {sorted(bad)}; known: {', '.join(FAMILIES)}")
        from memlens.lab.ltmia.corpora import DOMAINS

        bad = set(self.domains) - set(DOMAINS)
        if bad:
            raise LTMIAError(f"unknown domains {sorted(bad)}; known: {', '.join(DOMAINS)}")
        need = self.members + self.nonmembers + self.population
        if need > self.pool_per_domain:
            raise LTMIAError(f"a run needs {need} texts but the pool has {self.pool_per_domain} per domain")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GenerateConfig":
        """``tiny``: CI (two transformer families, 3 domains, seconds); ``small``: CPU in minutes
        (GPT-2, Llama, GPT-NeoX, RWKV; 4 domains); ``large``: one GPU (6 families incl. Mamba and
        RWKV, 5 domains, 1000 members / 1000 non-members per run; the shipped classifier's data).
        (Mamba's pure-PyTorch scan is ~10x slower than RWKV's loop on a CPU, so "small" has RWKV.)"""
        presets: dict[str, dict[str, Any]] = {
            "tiny": dict(families=("gpt2", "llama"), domains=("web", "pii", "code"), sizes=(ModelSize(64, 2, 4, 128),),
                         vocab_size=768, max_tokens=40, pretrain_per_domain=250, pool_per_domain=140, members=56,
                         nonmembers=56, population=24, pretrain_epochs=2, pretrain_lr=3e-3, pretrain_batch=32,
                         finetune_epochs=(4, 5), finetune_lr=(1.5e-3, 3e-3), finetune_batch=8, k=8, score_batch=64),
            "small": dict(families=("gpt2", "llama", "gptneox", "rwkv"), pretrain_epochs=2),
            "large": dict(families=FAMILIES, domains=("docs", "code", "pii", "web", "records"),
                          sizes=(ModelSize(256, 4, 8, 768),), family_sizes={"mamba": (ModelSize(256, 2, 8, 768),),
                                                                            "rwkv": (ModelSize(256, 2, 8, 768),)},
                          family_replicates={"mamba": 1, "rwkv": 1}, vocab_size=4096, max_tokens=128,
                          pretrain_per_domain=3000, pool_per_domain=2400, members=1000, nonmembers=1000, population=200,
                          replicates=2, pretrain_epochs=2, pretrain_lr=3e-3, pretrain_batch=96, finetune_epochs=(2, 3, 4),
                          finetune_lr=(1e-4, 8e-4), finetune_batch=32, score_batch=128),
        }
        if name not in presets:
            raise LTMIAError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        bad = sorted(set(overrides) - known)
        if bad:
            raise LTMIAError(f"unknown configuration field(s) {bad}; known: {', '.join(sorted(known))}")
        kw = {**presets[name], **overrides}
        return cls(name=name, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [s.to_dict() for s in self.sizes]
        d["family_sizes"] = {f: [s.to_dict() for s in v] for f, v in self.family_sizes.items()}
        return d

    def sizes_of(self, family: str) -> tuple[ModelSize, ...]:
        return self.family_sizes.get(family, self.sizes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerateConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def bases(self) -> list[str]:
        return [f"{f}-s{i}" for f in self.families for i in range(len(self.sizes_of(f)))]

    def runs(self) -> list[dict[str, Any]]:
        """Every run: id, base, family, size index, domain, replicate, fine-tuning epochs and lr."""
        out = []
        for base in self.bases():
            family, size = base.rsplit("-s", 1)
            for domain in self.domains:
                for r in range(self.family_replicates.get(family, self.replicates)):
                    run_id = f"{base}-{domain}-r{r}"
                    rng = random.Random(_stable_seed(self.seed, run_id))
                    lo, hi = self.finetune_lr
                    out.append({"run": run_id, "base": base, "family": family, "kind": FAMILY_KIND[family],
                                "size": int(size), "domain": domain, "replicate": r,
                                "epochs": rng.choice(self.finetune_epochs),
                                "lr": float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
                                "seed": _stable_seed(self.seed, run_id + "/train")})
        return out


def _stable_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------
# Atomic file helpers
# ---------------------------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    from memlens._io import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def _write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Corpus and tokenizer (once, in the parent process)
# ---------------------------------------------------------------------------------------------
def _cut_to_tokens(tokenizer, texts: Sequence[str], max_tokens: int, min_tokens: int) -> list[str]:
    """Each text cut after its ``max_tokens``-th token (at a token boundary); shorter than ``min_tokens``: dropped."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for text, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        if len(ids) < min_tokens:
            continue
        cut = text if len(ids) <= max_tokens else text[: offs[max_tokens - 1][1]]
        out.append(cut)
    return out


def prepare_corpus(out: Path, cfg: GenerateConfig, jobs: int = 1) -> tuple[Any, dict[str, list[str]], dict[str, list[str]]]:
    """Build (or reuse) the domain corpora and the tokenizer. Returns (tokenizer, pretrain texts, pools)."""
    from memlens.lab.ltmia.corpora import build_domains
    from memlens.testbed.build import read_jsonl, write_jsonl
    from memlens.testbed.train import train_tokenizer

    cdir = out / "corpus"
    files = {d: cdir / f"{d}.jsonl" for d in cfg.domains}
    tok_dir = out / "tokenizer"
    if all(f.is_file() for f in files.values()) and (tok_dir / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        pre, pools = {}, {}
        for d, f in files.items():
            rows = read_jsonl(f)
            pre[d] = [r["text"] for r in rows if r["split"] == "pretrain"]
            pools[d] = [r["text"] for r in rows if r["split"] == "pool"]
        return tokenizer, pre, pools
    cdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # some texts are dropped as too short once tokenized: draw a margin
    n = int((cfg.pretrain_per_domain + cfg.pool_per_domain) * 1.15) + 20
    texts, info = build_domains(cfg.domains, n, seed=cfg.seed, code_packages=cfg.code_packages, jobs=jobs)
    pre = {d: texts[d][: cfg.pretrain_per_domain] for d in cfg.domains}
    tokenizer = train_tokenizer([t for d in cfg.domains for t in pre[d]], cfg.vocab_size, context=cfg.max_tokens + 8)
    tokenizer.save_pretrained(str(tok_dir))
    pools = {}
    for d in cfg.domains:
        pool = _cut_to_tokens(tokenizer, texts[d][cfg.pretrain_per_domain:], cfg.max_tokens, cfg.min_tokens)
        pools[d] = pool[: cfg.pool_per_domain]
        if len(pools[d]) < cfg.members + cfg.nonmembers + cfg.population:
            raise LTMIAError(f"domain {d!r} has only {len(pools[d])} usable texts for runs of "
                               f"{cfg.members + cfg.nonmembers + cfg.population}")
        write_jsonl(files[d], [{"split": "pretrain", "text": t} for t in pre[d]] + [{"split": "pool", "text": t} for t in pools[d]])
    info["seconds"] = round(time.perf_counter() - t0, 2)
    _write_json(cdir / "info.json", info)
    return tokenizer, pre, pools


# ---------------------------------------------------------------------------------------------
# One base and its runs (a worker)
# ---------------------------------------------------------------------------------------------
def _load_or_pretrain(out: Path, cfg: GenerateConfig, base: str, tokenizer, pre: dict[str, list[str]], device: str):
    from safetensors.torch import load_file, save_file

    from memlens.lab.ltmia.families import make_lm
    from memlens.testbed.train import encode, train_lm

    family, size = base.rsplit("-s", 1)
    context = cfg.max_tokens + 8
    model = make_lm(family, cfg.sizes_of(family)[int(size)], len(tokenizer), context, seed=_stable_seed(cfg.seed, base),
                    pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id)
    bdir = out / "bases" / base
    wfile = bdir / "model.safetensors"
    if wfile.is_file() and (bdir / "training.json").is_file():
        model.load_state_dict(load_file(str(wfile)), strict=False)
        return model.to(device).eval(), json.loads((bdir / "training.json").read_text())
    texts = [t for d in cfg.domains for t in pre[d]]
    seqs = encode(tokenizer, texts, context)
    stats = train_lm(model, seqs, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, batch_size=cfg.pretrain_batch,
                     seed=_stable_seed(cfg.seed, base + "/pretrain"), device=device, pad_id=tokenizer.pad_token_id,
                     desc=f"pretrain {base}", progress=False)
    stats["params"] = sum(p.numel() for p in model.parameters())
    bdir.mkdir(parents=True, exist_ok=True)
    # tied weights share storage: save a clone of each tensor (safetensors refuses shared storage)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    _atomic(wfile, lambda p: save_file(state, str(p)))
    _write_json(bdir / "training.json", stats)
    return model.eval(), stats


def _run_files(out: Path, run_id: str) -> tuple[Path, Path, Path]:
    r = out / "runs"
    return r / f"{run_id}.features.npy", r / f"{run_id}.parquet", r / f"{run_id}.json"


def run_done(out: Path, run_id: str) -> bool:
    return all(p.is_file() for p in _run_files(out, run_id))


def score_run(target, base, tokenizer, members: list[str], nonmembers: list[str], population: list[str],
              spec, batch_size: int, baselines: Sequence[str] = BASELINES) -> tuple[list[np.ndarray], dict[str, np.ndarray], dict]:
    """One paired pass over a run's texts; LT-MIA features of members + non-members and the baselines' scores."""
    from memlens.attacks import AttackInput, ReferenceView, TokenComparison, get_attack
    from memlens.ltmia.features import PAIR_EXTRAS_KEY, input_features
    from memlens.models.causal import CausalScorer

    texts = members + nonmembers
    scorer = CausalScorer([target, base], tokenizer, batch_size=batch_size, max_length=spec.max_tokens + 1,
                          pair_reduction_names=("informia", "ltmia"), pair_settings=spec.pair_settings(), progress=False,
                          compile_reductions=False)
    t0 = time.perf_counter()
    res = scorer.score(texts + population)
    seconds = time.perf_counter() - t0
    n = len(texts)

    def part(lo: int, hi: int):
        recs = [res[i] for i in range(lo, hi)]
        return ([r["stats"][0] for r in recs], [ReferenceView("base", [r["stats"][1] for r in recs])],
                TokenComparison([r["pair"]["log_ratio"] for r in recs], [r["pair"]["kl_ref_target"] for r in recs]),
                [r["pair"] for r in recs])

    tgt, refs, comp, pair = part(0, n)
    ptgt, prefs, pcomp, _ = part(n, n + len(population))
    inp = AttackInput(texts=texts, target=tgt, references=refs, comparison=comp, population_texts=list(population),
                      population_target=ptgt, population_references=prefs, population_comparison=pcomp,
                      extras={PAIR_EXTRAS_KEY: pair})
    chunks, _ = input_features(inp, spec, windows="first")
    if len(chunks) != n:
        raise RuntimeError("a text of the run has no scored token")
    scores = {name: np.asarray(get_attack(name)(inp).scores, dtype=np.float64) for name in baselines}
    return chunks, scores, {"score_seconds": round(seconds, 2), "tokens": int(sum(len(s) for s in tgt))}


_WORKER: dict[str, Any] = {}


def _worker_state(out: Path, cfg: GenerateConfig, device: str, threads: int | None) -> dict[str, Any]:
    """Per-process state: corpus, tokenizer and the last base loaded (tasks of a base run in a row)."""
    import torch

    key = f"{out}|{device}"
    if _WORKER.get("key") != key:
        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        tokenizer, pre, pools = prepare_corpus(out, cfg)
        _WORKER.clear()
        _WORKER.update(key=key, tokenizer=tokenizer, pre=pre, pools=pools, base=None, base_id=None, base_info=None)
    return _WORKER


def _pretrain_task(out: str, cfg_dict: dict, base: str, device: str, threads: int | None,
                   deadline: float | None = None) -> float:
    """Task: pretrain ``base`` (or find it saved). Returns seconds (-1: skipped, past the deadline)."""
    if deadline is not None and time.time() > deadline:
        return -1.0
    t0 = time.perf_counter()
    cfg = GenerateConfig.from_dict(cfg_dict)
    st = _worker_state(Path(out), cfg, device, threads)
    _load_or_pretrain(Path(out), cfg, base, st["tokenizer"], st["pre"], device)
    log.info("base %s ready in %.1fs", base, time.perf_counter() - t0)
    return time.perf_counter() - t0


def _run_task(out: str, cfg_dict: dict, run: dict, device: str, threads: int | None,
              deadline: float | None = None) -> str | None:
    """Task: one run (fine-tune a copy of its base on the members, score, save features and baselines).
    Returns the run's id, or None when it was skipped (past the deadline, or its base was)."""
    if deadline is not None and time.time() > deadline:
        return None
    import pandas as pd
    import torch

    from memlens.cache import text_hash
    from memlens.ltmia.features import FeatureSpec, pad
    from memlens.testbed.train import encode, train_lm

    out_p = Path(out)
    cfg = GenerateConfig.from_dict(cfg_dict)
    st = _worker_state(out_p, cfg, device, threads)
    tokenizer = st["tokenizer"]
    if st["base_id"] != run["base"]:
        st["base"], st["base_info"] = _load_or_pretrain(out_p, cfg, run["base"], tokenizer, st["pre"], device)
        st["base"].to(device).eval()
        st["base_id"] = run["base"]
    base_model, base_info = st["base"], st["base_info"]
    spec = FeatureSpec(k=cfg.k, max_tokens=cfg.max_tokens, space=cfg.space)
    t_run = time.perf_counter()
    rng = random.Random(_stable_seed(cfg.seed, run["run"] + "/split"))
    pool = st["pools"][run["domain"]]
    pick = rng.sample(range(len(pool)), cfg.members + cfg.nonmembers + cfg.population)
    mem = [pool[i] for i in pick[: cfg.members]]
    non = [pool[i] for i in pick[cfg.members: cfg.members + cfg.nonmembers]]
    popu = [pool[i] for i in pick[cfg.members + cfg.nonmembers:]]
    target = copy.deepcopy(base_model)
    ft = train_lm(target, encode(tokenizer, mem, cfg.max_tokens + 8), epochs=run["epochs"], lr=run["lr"],
                  batch_size=cfg.finetune_batch, seed=run["seed"], device=device, pad_id=tokenizer.pad_token_id,
                  desc=f"finetune {run['run']}", progress=False)
    target.eval()
    chunks, scores, sinfo = score_run(target, base_model, tokenizer, mem, non, popu, spec, cfg.score_batch)
    x, lengths = pad(chunks, cfg.max_tokens, spec.dim, dtype=np.float16)
    labels = np.r_[np.ones(len(mem), np.int8), np.zeros(len(non), np.int8)]
    df = pd.DataFrame({"run": run["run"], "base": run["base"], "family": run["family"], "kind": run["kind"],
                       "domain": run["domain"], "index": np.arange(len(labels)), "label": labels, "length": lengths,
                       "text_hash": [text_hash(t) for t in mem + non], **{f"score_{k}": v for k, v in scores.items()}})
    fpath, ppath, jpath = _run_files(out_p, run["run"])
    fpath.parent.mkdir(parents=True, exist_ok=True)
    _atomic(fpath, lambda p: np.save(p, x))
    _atomic(ppath, lambda p: df.to_parquet(p, index=False))
    info = {**run, "finetune": ft, **sinfo, "seconds": round(time.perf_counter() - t_run, 2), "device": device,
            "base_train": {k: base_info.get(k) for k in ("steps", "epoch_mean_loss", "seconds", "params")}}
    _write_json(jpath, info)
    log.info("run %s done in %.1fs (finetune %.1fs, scoring %.1fs)", run["run"], info["seconds"], ft["seconds"],
             sinfo["score_seconds"])
    del target
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return run["run"]


#: relative cost of a training step by family (recurrent families loop over positions in Python)
_STEP_COST = {"mamba": 8.0, "rwkv": 8.0}


def generate(out_dir: str | Path, config: GenerateConfig | None = None, *, device: str = "auto", jobs: int = 1,
             threads: int | None = None, max_seconds: float | None = None) -> Path:
    """Generate (or complete) an LT-MIA data set in ``out_dir``. Returns ``out_dir``.

    Two phases: the bases are pretrained (in parallel with ``jobs`` > 1), then the runs, each an
    independent task, go to ``jobs`` worker processes, most expensive first. On a GPU several
    processes pay off: tiny models leave it mostly idle, their speed is the CPU's launch rate.

    ``max_seconds``: a time budget. No base or run starts after it (those running finish); the
    data set then holds the runs that were done, and the manifest lists the skipped ones (a
    later call completes them).
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    if config is None:
        if not cfg_file.is_file():
            raise LTMIAError(f"{cfg_file} is missing: give a config (preset) for a new data set")
        config = GenerateConfig.from_dict(json.loads(cfg_file.read_text()))
    elif cfg_file.is_file() and json.loads(cfg_file.read_text()) != json.loads(json.dumps(config.to_dict())):
        raise LTMIAError(f"{out} holds a data set of another configuration; use a new directory")
    _write_json(cfg_file, config.to_dict())
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    deadline = None if max_seconds is None else time.time() + max_seconds
    prepare_corpus(out, config, jobs=jobs)
    t_corpus = time.perf_counter() - t0
    cfg_d = config.to_dict()
    todo = [r for r in config.runs() if not run_done(out, r["run"])]
    bases = [b for b in config.bases() if any(r["base"] == b for r in todo)]
    # most expensive first: recurrent families, then by fine-tuning epochs
    todo.sort(key=lambda r: -_STEP_COST.get(r["family"], 1.0) * r["epochs"])
    t1 = time.perf_counter()
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # One pool: a base's runs are queued as soon as that base is pretrained, so the cheap
        # families' runs proceed while the recurrent ones are still pretraining.
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            pre = {ex.submit(_pretrain_task, str(out), cfg_d, b, device, threads, deadline): b for b in bases}
            runs = []
            for f in as_completed(pre):
                if f.result() < 0:
                    continue
                runs += [ex.submit(_run_task, str(out), cfg_d, r, device, threads, deadline) for r in todo if r["base"] == pre[f]]
            t2 = time.perf_counter()
            for f in runs:
                f.result()
    else:
        for b in bases:
            _pretrain_task(str(out), cfg_d, b, device, threads, deadline)
        t2 = time.perf_counter()
        for r in sorted(todo, key=lambda r: r["base"]):  # one base in memory at a time
            _run_task(str(out), cfg_d, r, device, threads, deadline)
    _WORKER.clear()
    # with jobs > 1, "pretrain_seconds" lasts until the last base is ready (runs overlap it)
    write_manifest(out, config, timings={"corpus_seconds": round(t_corpus, 2), "pretrain_seconds": round(t2 - t1, 2),
                                         "runs_seconds": round(time.perf_counter() - t2, 2),
                                         "seconds": round(time.perf_counter() - t0, 2), "device": device, "jobs": jobs})
    return out


def write_manifest(out: Path, cfg: GenerateConfig, timings: dict | None = None) -> dict:
    import pandas as pd

    runs = [r for r in cfg.runs() if run_done(out, r["run"])]
    if not runs:
        raise LTMIAError(f"no run of {out} is done (time budget too small?)")
    df = pd.concat([pd.read_parquet(_run_files(out, r["run"])[1]) for r in runs], ignore_index=True)
    _atomic(out / "samples.parquet", lambda p: df.to_parquet(p, index=False))
    infos = [json.loads(_run_files(out, r["run"])[2].read_text()) for r in runs]
    skipped = [r["run"] for r in cfg.runs() if not run_done(out, r["run"])]
    manifest = {"config": cfg.to_dict(), "runs": infos, "n_runs": len(runs), "skipped_runs": skipped, "n_samples": int(len(df)),
                "feature_dim": 7 * cfg.k + 14, "timings": timings or {}, "baselines": list(BASELINES)}
    try:
        import torch

        if torch.cuda.is_available():
            manifest["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover
        pass
    import platform

    manifest["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    _write_json(out / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Reading a data set
# ---------------------------------------------------------------------------------------------
@dataclass
class LTMIADataset:
    """A generated data set: ``samples`` (one row per text) and lazily loaded features."""

    root: Path
    config: GenerateConfig
    samples: Any  # pandas.DataFrame
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: str | Path) -> "LTMIADataset":
        import pandas as pd

        root = Path(root)
        if not (root / "config.json").is_file():
            raise LTMIAError(f"{root} is not an LT-MIA data set (no config.json; make one with `memlens ltmia generate`)")
        cfg = GenerateConfig.from_dict(json.loads((root / "config.json").read_text()))
        if (root / "samples.parquet").is_file():
            df = pd.read_parquet(root / "samples.parquet")
        else:
            # an unfinished generation: the runs whose files are all written
            parts = [pd.read_parquet(_run_files(root, r["run"])[1]) for r in cfg.runs() if run_done(root, r["run"])]
            if not parts:
                raise LTMIAError(f"no finished runs in {root}")
            df = pd.concat(parts, ignore_index=True)
        return cls(root, cfg, df)

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.samples["run"]))

    def features(self, run: str, mmap: bool = True) -> np.ndarray:
        """[n, max_tokens, D] float16 features of one run (rows in the run's sample order)."""
        if run not in self._cache:
            self._cache[run] = np.load(_run_files(self.root, run)[0], mmap_mode="r" if mmap else None)
        return self._cache[run]

    def arrays(self, runs: Sequence[str], max_windows: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """(features, lengths, labels, rows) for ``runs``, concatenated. With ``max_windows``, an
        equal random share of each run (read from the memory-mapped files row by row)."""
        import pandas as pd

        per_run = None if not max_windows else max(1, -(-max_windows // max(1, len(runs))))
        rng = np.random.default_rng(seed)
        xs, parts = [], []
        for r in runs:
            rows = self.samples[self.samples["run"] == r].sort_values("index")
            feats = self.features(r)
            if per_run is not None and per_run < len(rows):
                keep = np.sort(rng.choice(len(rows), per_run, replace=False))
                rows = rows.iloc[keep]
                xs.append(np.asarray(feats[keep]))
            else:
                xs.append(np.asarray(feats))
            parts.append(rows)
        if not runs:
            d = 7 * self.config.k + 14
            return np.zeros((0, self.config.max_tokens, d), np.float16), np.zeros(0, np.int64), np.zeros(0, np.int8), self.samples.iloc[:0]
        rows = pd.concat(parts, ignore_index=True)
        return np.concatenate(xs), rows["length"].to_numpy(), rows["label"].to_numpy(), rows
