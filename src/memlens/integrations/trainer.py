"""``MemlensCallback``: a membership audit at every evaluation of a ``transformers.Trainer`` (or a
TRL trainer, which is one), logged next to the loss curves.

At each ``on_evaluate`` and at ``on_train_end`` the callback runs memlens's cached statistics pass
on the trainer's unwrapped model for the given member and held-out texts, computes the attacks
and logs ``memlens/<attack>/auc`` and ``memlens/<attack>/tpr@1%`` through ``trainer.log``, so
every tracker configured with ``report_to`` (W&B, MLflow, TensorBoard, ...) receives them and
they land in ``trainer.state.log_history``. At the end it writes ``report.html`` (and the audit's
files under ``memlens/``) into ``args.output_dir``.

It never changes training: it runs without gradients, puts the model back in the mode it found
it in, and saves and restores the torch (CPU and CUDA), numpy and Python RNG states, because the
audit seeds them. Sharded models (FSDP, DeepSpeed ZeRO-3) hold only a slice of each weight per
process: the callback skips them with a warning; audit the saved checkpoint instead.

Callbacks are not given the trainer, and ``trainer.log`` is the only way to reach the trackers,
so the callback needs it: ``MemlensCallback(...).attach(trainer)`` (or pass ``callbacks=[cb]`` to
the trainer: the callback then finds the trainer that calls it when training begins).
"""
from __future__ import annotations

import logging
import random
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

log = logging.getLogger("memlens")

SHARDED_MESSAGE = ("memlens: the model is sharded ({how}); each process holds only part of the weights, so the callback "
                   "skips the membership audit: audit the saved checkpoint instead (memlens audit <output_dir>/checkpoint-N)")


@contextmanager
def preserved_state(model: torch.nn.Module):
    """Run a block without touching training: no grad, the model's train/eval mode and every RNG
    (torch CPU and CUDA, numpy, Python ``random``) as they were before."""
    was_training = model.training
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def sharding(args: Any, model: torch.nn.Module) -> str | None:
    """How the model is sharded across processes (FSDP or ZeRO-3), or None."""
    if getattr(args, "fsdp", None):
        return "FSDP"
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return "DeepSpeed ZeRO-3"
    except ImportError:  # pragma: no cover - older/newer transformers without the helper
        pass
    if type(model).__name__ == "FullyShardedDataParallel" or any(hasattr(p, "ds_numel") for p in model.parameters()):
        return "FSDP" if type(model).__name__ == "FullyShardedDataParallel" else "DeepSpeed ZeRO-3"
    return None


def _find_trainer(callback: Any) -> Any:
    """The Trainer whose callback handler is calling ``callback`` right now, found on the stack."""
    from transformers import Trainer

    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, Trainer) and callback in getattr(obj.callback_handler, "callbacks", ()):
            return obj
        frame = frame.f_back
    return None


class MemlensCallback(TrainerCallback):
    """Membership audit during training.

    ``members``: texts the model trains on (a sample of the training set, or inserted canaries);
    ``nonmembers``: held-out texts from the same distribution. Paths or lists of strings/dicts,
    as for :func:`memlens.audit`. ``reference``: an optional reference model (path or in-memory
    model on the same tokenizer), or ``"auto"`` for a ``peft`` model: the same model with its
    adapter disabled (no second copy of the weights). ``attacks``: as for :func:`memlens.audit`.
    ``cache_dir``: "output" (``<output_dir>/memlens/cache``), a path, or None (memory only); each
    evaluation's weights have their own fingerprint, so every evaluation is a new cache key.
    ``on_evaluate``/``on_train_end``: when to audit. ``report``: write report.html at the end.
    ``canaries``: a canary manifest (:mod:`memlens.canary`, or its path) whose inserted canaries
    are in the training data: their exposure is logged too, as ``memlens/exposure/rep<k>`` (mean
    over the canaries inserted k times; ``rep0``: held out), and saved in results.json.
    ``exposure_options``: keyword arguments of :func:`memlens.canary.exposure` (method, n_samples...).
    ``score``: the tokens the attacks aggregate over, as for :func:`memlens.audit` ("auto": the
    completion of prompt/completion records, the assistant turns of chat records, else every token).
    """

    def __init__(self, members, nonmembers, *, reference: Any = None, attacks: Sequence[str] | str = "all",
                 attack_params: dict[str, dict] | None = None, max_length: int | None = None, batch_size: int | None = None,
                 n_bootstrap: int = 0, cache_dir: str | Path | None = "output", text_field: str = "text",
                 on_evaluate: bool = True, on_train_end: bool = True, report: bool = True, seed: int = 0,
                 canaries: Any = None, exposure_options: dict[str, Any] | None = None, score: str = "auto"):
        from memlens.data import as_samples

        # validate the texts now, not after the first hours of training
        self.members = as_samples(members, default_label=1, name="members", text_field=text_field)
        self.nonmembers = as_samples(nonmembers, default_label=0, name="non-members", text_field=text_field)
        if not self.members or not self.nonmembers:
            from memlens.data import DataError

            raise DataError("MemlensCallback needs member and held-out (non-member) texts")
        self.reference = reference
        from memlens.scope import SCORE_MODES

        if score not in SCORE_MODES:  # now, not at the first evaluation
            from memlens.data import DataError

            raise DataError(f"--score must be one of {', '.join(SCORE_MODES)}, got {score!r}")
        self.score = score  # which tokens count: completion / assistant / all / auto (see memlens.scope)
        self.attacks = attacks
        self.attack_params = attack_params
        self.max_length = max_length
        self.batch_size = batch_size
        self.n_bootstrap = n_bootstrap
        self.cache_dir = cache_dir
        self.audit_on_evaluate = on_evaluate
        self.audit_on_train_end = on_train_end
        self.write_report = report
        self.seed = seed
        if canaries is not None and not hasattr(canaries, "canaries"):
            from memlens.canary import Manifest

            canaries = Manifest.load(canaries)
        self.canaries = canaries
        self.exposure_options = dict(exposure_options or {})
        self.trainer: Any = None
        self.last_result: Any = None  # the latest memlens AuditResult
        self.history: list[dict[str, float]] = []  # every logged dict, with its step
        self._warned: set[str] = set()
        self._last_fingerprint: str | None = None

    # ------------------------------------------------------------------ wiring
    def attach(self, trainer: Any) -> Any:
        """Add this callback to ``trainer`` and log through it; returns the trainer."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return trainer

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if isinstance(self.reference, str) and self.reference == "auto" and model is not None:
            _adapter_disabled(_unwrap(model))  # fail before training, not at the first evaluation
        if self.trainer is None:
            self.trainer = _find_trainer(self)
        if self.trainer is None:
            self._warn_once("no-trainer", "memlens: MemlensCallback cannot reach the trainer, so its metrics go to "
                            "state.log_history only (no report_to trackers); use MemlensCallback(...).attach(trainer)")

    # transformers < 4.46 passes the tokenizer as ``tokenizer``, later versions as ``processing_class``
    def on_evaluate(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.audit_on_evaluate:
            self._audit_and_log(args, state, model, processing_class or kwargs.get("tokenizer"), final=False)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.audit_on_train_end:
            self._audit_and_log(args, state, model, processing_class or kwargs.get("tokenizer"), final=True)

    # ------------------------------------------------------------------ the audit
    def _audit_and_log(self, args, state, model, tokenizer, *, final: bool) -> None:
        if model is None:
            return
        how = sharding(args, model)
        if how is not None:
            self._warn_once("sharded", SHARDED_MESSAGE.format(how=how))
            return
        if tokenizer is None or not hasattr(tokenizer, "backend_tokenizer"):
            self._warn_once("tokenizer", "memlens: the trainer has no fast tokenizer (processing_class=...), so the "
                            "membership audit is skipped")
            return
        model = _unwrap(model)
        from memlens.models.loading import fingerprint_module

        fp = fingerprint_module(model)
        if fp == self._last_fingerprint and self.last_result is not None:
            # training ended right after an evaluation: same weights, already logged at this step
            result = self.last_result
        else:
            result = self._run(args, model, tokenizer)
            logs = metrics_to_logs(result)
            if self.canaries is not None:
                exp = self._exposure(model, tokenizer)
                result.extra["canary_exposure"] = exp.to_dict()
                for k, v in exp.by_repetition().items():
                    logs[f"memlens/exposure/rep{k}"] = v["mean"]
            self._last_fingerprint = fp
            self.last_result = result
            self.history.append({**logs, "step": state.global_step})
            self._log(state, logs)
        if final and self.write_report and state.is_world_process_zero:
            out = Path(args.output_dir)
            from memlens.report.html import write_report

            result.save(out / "memlens", report=False)  # the report goes beside the trainer's output, below
            write_report(result, out)

    def _log(self, state, logs: dict[str, float]) -> None:
        if logs:
            if self.trainer is not None:
                self.trainer.log(dict(logs))
            else:
                state.log_history.append({**logs, "step": state.global_step})

    def _run(self, args, model: torch.nn.Module, tokenizer: Any):
        from memlens.audit import audit

        cache_dir = Path(args.output_dir) / "memlens" / "cache" if self.cache_dir == "output" else self.cache_dir
        with preserved_state(model):
            ref = self.reference
            if isinstance(ref, str) and ref == "auto":
                ref = _adapter_disabled(model)
            # ModelHandle puts the in-memory model in eval mode; preserved_state puts it back
            return audit(model, ref, members=self.members, nonmembers=self.nonmembers, attacks=self.attacks,
                         attack_params=self.attack_params, tokenizer=tokenizer, batch_size=self.batch_size,
                         max_length=self.max_length, cache_dir=cache_dir, n_bootstrap=self.n_bootstrap,
                         seed=self.seed, progress=False, score=self.score)


    def _exposure(self, model: torch.nn.Module, tokenizer: Any):
        from memlens.canary import model_exposure

        with preserved_state(model):
            return model_exposure(model, tokenizer, self.canaries, **{"seed": self.seed, **self.exposure_options})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DataParallel/DDP wrappers (the Trainer passes its unwrapped model, but a
    TRL or custom trainer may not)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module) and type(model).__name__ in (
            "DistributedDataParallel", "DataParallel"):
        model = model.module
    return model


def _adapter_disabled(model: torch.nn.Module) -> torch.nn.Module:
    if not hasattr(model, "disable_adapter"):
        from memlens.data import DataError

        raise DataError("reference='auto' needs a peft model (the reference is the model with its adapter disabled)")
    from memlens.models.adapters import AdapterDisabled

    return AdapterDisabled(model)


def metrics_to_logs(result: Any) -> dict[str, float]:
    """``memlens/<attack>/auc`` and ``memlens/<attack>/tpr@<fpr>`` (those with enough held-out texts
    to be measured) from an audit result."""
    logs: dict[str, float] = {}
    for name, m in result.metrics.items():
        if np.isfinite(m.auc):
            logs[f"memlens/{name}/auc"] = float(m.auc)
        for fpr, tpr in m.tpr.items():
            if tpr is not None:
                logs[f"memlens/{name}/tpr@{fpr}"] = float(tpr)
    return logs
