"""A model known by its fingerprint, loaded only when a pass needs to run it.

The fingerprints (weights, tokenizer) are the model's part of every cache key, so a fully cached
audit never loads the weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from memlens.models.loading import (
    ModelSpec,
    check_tokenizer,
    context_length,
    fingerprint_files,
    fingerprint_module,
    fingerprint_tokenizer,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_model,
)

log = logging.getLogger("memlens")


@dataclass
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    device_map: str | None = None
    revision: str | None = None


class ModelHandle:
    """A model known by fingerprint, with its tokenizer; the weights load only when needed."""

    def __init__(self, model: Any, tokenizer: Any = None, *, name: str | None = None, gguf_file: str | None = None,
                 options: LoadOptions | None = None):
        self.options = options or LoadOptions()
        self._model: torch.nn.Module | None = None
        self.spec: ModelSpec | None = None
        if isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("an in-memory model needs its tokenizer (tokenizer=...)")
            self._model = model.eval()
            self.name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
            self.fingerprint = fingerprint_module(model)
        else:
            self.spec = resolve_model(model, gguf_file=gguf_file, revision=self.options.revision, allow_pickle=self.options.allow_pickle)
            self.name = name or self.spec.label
            self.fingerprint = fingerprint_files(self.spec)
            if tokenizer is None:
                tokenizer = load_tokenizer(self.spec, trust_remote_code=self.options.trust_remote_code)
        check_tokenizer(tokenizer, self.name)  # also one given by the caller: an empty one would score NaN silently
        self.tokenizer = tokenizer
        self.tokenizer_fingerprint = fingerprint_tokenizer(tokenizer)
        self._context: int | None = None
        self.numerics = self._numerics(gguf_file)

    def _numerics(self, gguf_file: str | None) -> dict[str, Any]:
        """How the weights are loaded, where that changes the numbers (cache keys, results.json):
        the dtype actually used ("auto" resolved), revision, device map, GGUF file."""
        if self._model is not None:
            p = next(iter(self._model.parameters()), None)
            return {"dtype": str(p.dtype).removeprefix("torch.") if p is not None else None}
        o = self.options
        dtype = pick_dtype(o.dtype, pick_device(o.device))  # as load_model resolves it
        out: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "revision": o.revision, "device_map": o.device_map}
        if gguf_file:
            out["gguf_file"] = gguf_file
        return out

    def context_length(self) -> int:
        """The longest input the model takes, from its config (without loading the weights)."""
        if self._context is None:
            cfg = None
            if self._model is None and self.spec is not None:
                try:
                    from transformers import AutoConfig

                    extra = {"gguf_file": self.spec.gguf_file} if self.spec.gguf_file else {}
                    cfg = AutoConfig.from_pretrained(str(self.spec.path), trust_remote_code=self.options.trust_remote_code, **extra)
                except Exception:
                    cfg = None
            holder = SimpleNamespace(config=cfg) if cfg is not None else self.model
            self._context = context_length(holder, self.tokenizer)
        return self._context

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            assert self.spec is not None
            o = self.options
            log.info("loading %s", self.name)
            self._model = load_model(self.spec, device=o.device, dtype=o.dtype, trust_remote_code=o.trust_remote_code,
                                     allow_pickle=o.allow_pickle, device_map=o.device_map)
        return self._model

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "load": self.numerics}
