"""Tokenizer and tiny causal LMs for the testbed: base (pretrained), target (fine-tuned on
members), and optional population-trained references.

* The tokenizer is a byte-level BPE trained with ``tokenizers`` on the *pretraining* corpus only,
  so audited PII never shapes the vocabulary (a member's name is not one token because it was a
  member). ``<|endoftext|>`` is BOS, EOS and PAD; the tokenizer prepends BOS itself (a template
  post-processor), so anyone who loads it with ``AutoTokenizer`` scores text exactly the way the
  models were trained.
* Models are small Llama-architecture ``transformers`` models saved with ``save_pretrained``
  (safetensors) next to their tokenizer, so every model directory loads on its own.
* The loop is plain PyTorch: AdamW, linear warm-up then cosine decay, right-padded batches with
  the loss masked on padding, seeded shuffling and initialisation.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memlens._progress import progress_bar as tqdm

from .build import TestbedConfig, TestbedPaths, read_jsonl

SPECIAL_TOKEN = "<|endoftext|>"


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def train_tokenizer(texts: Sequence[str], vocab_size: int, context: int = 256):
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    The special token ``<|endoftext|>`` (id 0) serves as BOS, EOS, PAD and UNK (byte-level BPE
    never needs UNK, but some tools insist on one). Encoding prepends BOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is representable
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    bos = tok.token_to_id(SPECIAL_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKEN} $A",
        pair=f"{SPECIAL_TOKEN} $A {SPECIAL_TOKEN} $B",
        special_tokens=[(SPECIAL_TOKEN, bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        model_max_length=context,
    )


def encode(tokenizer, texts: Sequence[str], context: int) -> list[list[int]]:
    """``BOS text EOS`` token ids per text, truncated to ``context`` tokens.

    EOS is part of the training target so the model learns where documents end (greedy
    extraction would otherwise run on into the next template).
    """
    ids = tokenizer(list(texts), truncation=True, max_length=context)["input_ids"]
    return [(seq + [tokenizer.eos_token_id])[:context] for seq in ids]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def make_model(cfg: TestbedConfig, vocab_size: int, seed: int | None = None):
    """A freshly initialised Llama-architecture causal LM sized by ``cfg``.

    Llama rather than GPT-2: it is the architecture every downstream tool (GGUF export, LoRA,
    fast kernels) supports best, and on CPU it trained faster than a GPT-2 of the same width.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    mc = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.context,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
    )
    return LlamaForCausalLM(mc)


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------
def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Random batches of similar-length sequences: shuffle, sort within large windows, cut,
    shuffle the batches. Keeps the order random while wasting little compute on padding."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * 32
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def warmup_cosine(step: int, warmup: int, total: int, min_lr_ratio: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up over ``warmup`` steps, then cosine decay
    to ``min_lr_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def collate(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    # PAD == EOS, so padding must be masked by position, not by token id: the real EOS that
    # ends each document stays a training target.
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_lm(
    model,
    seqs: Sequence[list[int]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
    warmup_frac: float = 0.05,
    weight_decay: float = 0.01,
    min_lr_ratio: float = 0.1,
    pad_id: int = 0,
    desc: str = "train",
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on token sequences; return a summary (losses, steps, time).

    AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``. Batches are drawn in a
    seeded random order, so the same seed and data give the same run.

    ``checkpoint``: a file written at the end of every epoch (model, optimizer, schedule, losses);
    if it exists when training starts, training resumes after its last finished epoch (the batch
    plan is drawn from the seed up front, so the resumed run sees the same batches). Deleted when
    training finishes.
    """
    model.to(device)
    model.train()
    rng = random.Random(f"{seed}/{desc}")
    lengths = [len(s) for s in seqs]
    plan = [length_bucketed_batches(lengths, batch_size, rng) for _ in range(epochs)]
    total = sum(len(p) for p in plan)
    warmup = max(1, int(warmup_frac * total))

    def lr_at(step: int) -> float:
        return warmup_cosine(step, warmup, total, min_lr_ratio)

    # No weight decay on norms and biases (standard; decaying RMSNorm gains only hurts).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    torch.manual_seed(seed)
    t0, step, tokens, ema = time.perf_counter(), 0, 0, None
    epoch_losses: list[float] = []
    done_epochs = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("total_steps") == total:  # a checkpoint of another plan (other data or epochs) is ignored
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            done_epochs, step, tokens = int(state["epochs_done"]), int(state["step"]), int(state["tokens"])
            epoch_losses = [float(x) for x in state["epoch_losses"]]
    resumed_after = done_epochs or None
    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress, leave=False)
    for epoch_batches in plan[done_epochs:]:
        loss_sum, n_batches = 0.0, 0
        for batch_idx in epoch_batches:
            batch = {
                k: v.to(device) for k, v in collate([seqs[i] for i in batch_idx], pad_id).items()
            }
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())
            loss_sum, n_batches = loss_sum + value, n_batches + 1
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            tokens += int(batch["attention_mask"].sum())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}")
        epoch_losses.append(loss_sum / max(1, n_batches))
        done_epochs += 1
        if ckpt is not None and done_epochs < len(plan):
            _write_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "epochs_done": done_epochs, "step": step, "tokens": tokens, "total_steps": total,
                                     "epoch_losses": epoch_losses})
    bar.close()
    model.eval()
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return {
        "resumed_after_epoch": resumed_after,
        "steps": step,
        "epochs": epochs,
        "tokens": tokens,
        "lr": lr,
        "batch_size": batch_size,
        "epoch_mean_loss": [round(x, 4) for x in epoch_losses],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _write_checkpoint(path: Path, state: dict) -> None:
    # written beside and renamed: a Ctrl-C while saving leaves the previous epoch's checkpoint whole
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    tmp.replace(path)


def _save(model, tokenizer, out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _population_half(
    population: list[dict], tiers: Sequence[int], seed: int, index: int, filler: list[dict]
) -> tuple[list[dict], dict[str, int]]:
    """A reference's fine-tuning stream: a random half of the population, split into the member
    tiers' proportions and repeated accordingly, plus the target's filler documents.

    A reference model should be trained the way the target was, so its data has the same
    1x/4x/16x repetition profile and the same dilution as the target's fine-tuning stream.
    """
    rng = random.Random(f"{seed}/ref{index}")
    chosen = rng.sample(population, len(population) // 2)
    per_tier = len(chosen) // len(tiers)
    tier_of: dict[str, int] = {}
    for t_idx, tier in enumerate(tiers):
        end = len(chosen) if t_idx == len(tiers) - 1 else (t_idx + 1) * per_tier
        for rec in chosen[t_idx * per_tier : end]:
            tier_of[rec["id"]] = tier
    stream = [rec for rec in chosen for _ in range(tier_of[rec["id"]])] + list(filler)
    rng.shuffle(stream)
    return stream, tier_of


def _finetune(base, tokenizer, cfg: TestbedConfig, records: list[dict], out: Path, role: str, extra: dict, hp: dict,
              seed: int | None = None, fingerprint: str | None = None, checkpoint: Path | None = None) -> dict:
    """The target's fine-tuning recipe (a copy of ``base``, cfg's fine-tune epochs, lr and batch size) on
    ``records``; saved to ``out`` with its training.json. Every fine-tune of the testbed goes through here.
    ``fingerprint`` is recorded (models of the same one are reused); ``checkpoint``: see :func:`train_lm`."""
    model = copy.deepcopy(base)
    stats = train_lm(
        model,
        encode(tokenizer, [r["text"] for r in records], cfg.context),
        epochs=cfg.finetune_epochs,
        lr=cfg.finetune_lr,
        batch_size=cfg.finetune_batch_size,
        seed=cfg.seed + 1 if seed is None else seed,
        desc=f"finetune {out.name}",
        checkpoint=checkpoint,
        **hp,
    )
    info = {"role": role, "init": "base", **extra, **({"fingerprint": fingerprint} if fingerprint else {}), **stats}
    _save(model, tokenizer, out, info)
    return info


def train_models(
    paths: TestbedPaths | str | Path,
    config: TestbedConfig | None = None,
    device: str = "cpu",
    *,
    progress: bool = True,
    num_threads: int | None = None,
    retrain: bool = False,
) -> TestbedPaths:
    """Train the tokenizer, the base model, the target and any references of a built testbed.

    Args:
        paths: a testbed written by :func:`memlens.testbed.build.build_testbed` (or its root).
        config: defaults to the config recorded in the testbed's manifest.
        device: torch device, e.g. "cpu" or "cuda".
        progress: show tqdm progress bars.
        num_threads: ``torch.set_num_threads`` while training on CPU (restored afterwards);
            None keeps torch's default (one thread per physical core).

    Writes ``models/tokenizer``, ``models/base`` (pretrained: the default reference),
    ``models/target`` (base fine-tuned on ``finetune_corpus.jsonl``), ``models/ref_pop{i}``
    and ``models/training.json`` (a summary with timings; ``reused`` / ``trained`` name the models).

    A model already saved with the same :func:`training_fingerprint` (config + data hashes) is
    loaded instead of trained, and a model whose training was interrupted resumes from its last
    epoch checkpoint (``models/checkpoints``); ``retrain=True`` trains everything afresh.
    """
    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    cfg = config or paths.config()
    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        return _train_models(paths, cfg, device, progress, retrain)
    finally:
        torch.set_num_threads(prev_threads)


TRAINING_FORMAT = "memlens-testbed-training/1"  # bump when training changes what a config produces


def training_fingerprint(paths: TestbedPaths, cfg: TestbedConfig) -> str:
    """What determines the trained models: the config and the hashes of the data files in the
    manifest (and this module's format). Models saved with the same fingerprint are reused."""
    import hashlib

    files = json.loads(paths.manifest.read_text()).get("files", {}) if paths.manifest.is_file() else {}
    key = json.dumps({"format": TRAINING_FORMAT, "config": cfg.to_dict(), "files": files}, sort_keys=True, default=list)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _saved_record(d: Path, fingerprint: str, payload: str) -> dict | None:
    """``d/training.json`` when ``d/payload`` exists beside it and the record has this fingerprint, else None.

    ``training.json`` is written after what it describes, so its presence means the save finished; an
    interrupted save, or one of another configuration, gives None."""
    f = d / "training.json"
    if not f.is_file() or not (d / payload).is_file():
        return None
    try:
        info = json.loads(f.read_text())
    except ValueError:
        return None
    return info if info.get("fingerprint") == fingerprint else None


def saved_info(model_dir: Path, fingerprint: str) -> dict | None:
    """The training record of a model saved whole with this fingerprint, else None."""
    return _saved_record(model_dir, fingerprint, "model.safetensors")


def _train_models(
    paths: TestbedPaths, cfg: TestbedConfig, device: str, progress: bool, retrain: bool = False
) -> TestbedPaths:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    t_start = time.perf_counter()
    fp = training_fingerprint(paths, cfg)
    summary: dict[str, Any] = {"device": str(device), "torch_threads": torch.get_num_threads(), "fingerprint": fp,
                               "reused": [], "trained": []}
    pretrain_texts = [r["text"] for r in read_jsonl(paths.pretrain_corpus)]
    hp = {
        "device": device,
        "warmup_frac": cfg.warmup_frac,
        "weight_decay": cfg.weight_decay,
        "progress": progress,
    }
    ckpt_dir = paths.models / "checkpoints"

    t0 = time.perf_counter()
    tok_info = None if retrain else saved_tokenizer_info(paths.tokenizer, fp)
    if tok_info is not None:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(paths.tokenizer))
        summary["tokenizer"] = tok_info
    else:
        tokenizer = train_tokenizer(pretrain_texts, cfg.vocab_size, cfg.context)
        tokenizer.save_pretrained(paths.tokenizer)
        summary["tokenizer"] = {
            "vocab_size": len(tokenizer),
            "seconds": round(time.perf_counter() - t0, 2),
            "fingerprint": fp,
        }
        (paths.tokenizer / "training.json").write_text(json.dumps(summary["tokenizer"], indent=2) + "\n")

    # Base: pretrained from scratch on public prose + background-profile documents.
    base_info = None if retrain else saved_info(paths.base, fp)
    if base_info is not None:
        base = AutoModelForCausalLM.from_pretrained(str(paths.base))
        summary["reused"].append("base")
    else:
        base = make_model(cfg, len(tokenizer), seed=cfg.seed)
        stats = train_lm(
            base,
            encode(tokenizer, pretrain_texts, cfg.context),
            epochs=cfg.pretrain_epochs,
            lr=cfg.pretrain_lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            desc="pretrain base",
            checkpoint=None if retrain else ckpt_dir / f"base-{fp}.pt",
            **hp,
        )
        base_info = {"role": "base", "data": paths.pretrain_corpus.name, "init": "random", "fingerprint": fp, **stats}
        _save(base, tokenizer, paths.base, base_info)
        summary["trained"].append("base")
    summary["base"] = base_info

    def finetune(records: list[dict], name: str, role: str, extra: dict) -> dict:
        info = None if retrain else saved_info(paths.models / name, fp)
        if info is not None:
            summary["reused"].append(name)
            return info
        info = _finetune(base, tokenizer, cfg, records, paths.models / name, role, extra, hp, fingerprint=fp,
                         checkpoint=None if retrain else ckpt_dir / f"{name}-{fp}.pt")
        summary["trained"].append(name)
        return info

    # Target: base fine-tuned on the members' repeated stream (and the filler).
    corpus = read_jsonl(paths.finetune_corpus)
    summary["target"] = finetune(corpus, "target", "target", {"data": paths.finetune_corpus.name})

    # References: base fine-tuned on random population halves with the members' tier profile.
    population = read_jsonl(paths.population)
    filler = [r for r in corpus if r.get("source") == "filler"]
    refs: dict[str, dict] = {}
    for i in range(cfg.n_reference_models):
        stream, tier_of = _population_half(population, cfg.tiers, cfg.seed, i, filler)
        name = f"ref_pop{i}"
        info = finetune(
            stream, name, "reference", {"data": paths.population.name, "population_tiers": tier_of}
        )
        refs[name] = {"population_ids": sorted(tier_of), "tier": tier_of}
        summary[name] = {k: v for k, v in info.items() if k != "population_tiers"}
    if refs:
        (paths.models / "references.json").write_text(json.dumps(refs, indent=2) + "\n")

    summary["seconds_total"] = round(time.perf_counter() - t_start, 2)
    (paths.models / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def saved_tokenizer_info(tok_dir: Path, fingerprint: str) -> dict | None:
    """The tokenizer's record when it was trained with this fingerprint and saved whole, else None."""
    return _saved_record(tok_dir, fingerprint, "tokenizer.json")


def balanced_splits(n_texts: int, k: int, seed: int) -> list[list[int]]:
    """For each text, the K/2 reference indices it is IN for (seeded): every text is IN for exactly
    half of the references, so the plain mean over references is ½(mean_IN + mean_OUT), the RMIA
    paper's online estimator, for every text (random halves would give Binomial(K, ½) IN counts)."""
    if k < 2 or k % 2:
        raise ValueError(f"the number of split references must be even and at least 2, got {k}")
    rng = random.Random(f"{seed}/splits/{k}")
    return [sorted(rng.sample(range(k), k // 2)) for _ in range(n_texts)]


@dataclass
class SplitPlan:
    """K split references' data: which pool texts each trains on, and its stream (IN texts repeated per
    tier, plus the target's filler, shuffled)."""

    names: list[str]
    streams: dict[str, list[dict]]
    members: dict[str, list[str]]  # reference -> sha256 of its IN texts
    pool: list[str]  # sha256 of every pool text
    meta: dict  # k, seed, tiers, ids: recorded in the splits file

    def write(self, path: str | Path) -> Path:
        from memlens.splits import write_splits

        return write_splits(path, self.names, self.members, self.pool, **self.meta)


def split_plan(paths: TestbedPaths | str | Path, k: int = 4, seed: int | None = None, repeats: int | None = None) -> SplitPlan:
    """The balanced splits of :func:`train_split_references` (also used to fine-tune real bases that way).

    The pool is members + non-members + population. Each text is IN for exactly k/2 references; a text
    IN for a reference is repeated per its tier (a member: its own; a non-member or population text: a
    tier drawn, seeded, in the members' proportions), and every reference also gets the target's filler
    documents, so its stream has the target's repetition profile and dilution. That uses the testbed's
    ground truth (the members' repetition counts), which an auditor does not have: ``repeats=N`` instead
    repeats every IN text N times, one count for all candidates, as an auditor would choose it.
    """
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    from memlens.cache import text_hash

    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    if seed is None:
        seed = paths.config().seed if paths.manifest.is_file() else 0
    members = read_jsonl(paths.members)
    pool = members + read_jsonl(paths.nonmembers) + read_jsonl(paths.population)
    filler = [r for r in read_jsonl(paths.finetune_corpus) if r.get("source") == "filler"]
    rng = random.Random(f"{seed}/split-tiers")
    member_tiers = [int(r["tier"]) for r in members]
    tier_of = {r["id"]: int(r["tier"]) if r.get("label") == 1 and r.get("tier") is not None else rng.choice(member_tiers) for r in pool}
    if repeats is not None:
        tier_of = {i: int(repeats) for i in tier_of}
    ins = balanced_splits(len(pool), k, seed)
    names = [f"split_ref{i}" for i in range(k)]
    trained_on = {n: [rec for rec, rs in zip(pool, ins) if i in rs] for i, n in enumerate(names)}
    streams = {}
    for n in names:
        streams[n] = [rec for rec in trained_on[n] for _ in range(tier_of[rec["id"]])] + filler
        random.Random(f"{seed}/{n}/order").shuffle(streams[n])
    meta = {"k": k, "seed": seed, "recipe": "the target's fine-tune, from the target's base, + the target's filler",
            "repeats": "true tier" if repeats is None else int(repeats),
            "tiers": tier_of, "ids": {n: sorted(r["id"] for r in trained_on[n]) for n in names}}
    return SplitPlan(names, streams, {n: [text_hash(r["text"]) for r in trained_on[n]] for n in names},
                     [text_hash(r["text"]) for r in pool], meta)


def train_split_references(
    paths: TestbedPaths | str | Path,
    k: int = 4,
    device: str = "cpu",
    *,
    seed: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    repeats: int | None = None,
) -> Path:
    """Train ``k`` reference models like the target on balanced random halves of the pool (:func:`split_plan`;
    ``repeats``: one repetition count for every IN text instead of the members' true tiers).

    The recipe is the target's (:func:`_finetune` from ``models/base``). Writes ``models/split_ref{i}``
    and ``models/splits.json`` (the format of :mod:`memlens.splits`; entries are the model folders'
    names, relative to ``models/``). Models already trained with the same splits are reused. Returns
    the splits file's path.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    cfg = paths.config()
    plan = split_plan(paths, k, cfg.seed if seed is None else seed, repeats=repeats)
    splits_path = paths.models / "splits.json"
    prev = json.loads(splits_path.read_text()) if splits_path.is_file() else {}
    # files written before the repeats option trained with the true tiers
    same = all(prev.get(f) == plan.meta[f] for f in ("k", "seed", "ids")) and prev.get("repeats", "true tier") == plan.meta["repeats"]
    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        todo = [i for i, n in enumerate(plan.names) if not (same and (paths.models / n / "training.json").is_file())]
        if todo:
            tokenizer = AutoTokenizer.from_pretrained(paths.base)
            base = AutoModelForCausalLM.from_pretrained(paths.base, dtype=torch.float32)
            hp = {"device": device, "warmup_frac": cfg.warmup_frac, "weight_decay": cfg.weight_decay, "progress": progress}
            for i in todo:
                n = plan.names[i]
                _finetune(base, tokenizer, cfg, plan.streams[n], paths.models / n, "split reference",
                          {"data": "balanced half of members + nonmembers + population", "n_in": len(plan.members[n])}, hp,
                          seed=cfg.seed + 101 + i)
    finally:
        torch.set_num_threads(prev_threads)
    return plan.write(splits_path)
