"""PEFT adapters as models: a directory with ``adapter_config.json`` is its base with the adapter.

The base is the adapter config's ``base_model_name_or_path`` (a directory, ``.gguf`` file or hub
id, resolved like any model spec) unless a base is given. ``reference="auto"`` is the same model
with its adapter disabled: one copy of the base weights in memory, and target and reference share
the tokenizer, so they run in memlens's paired pass.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from memlens.models.loading import ModelLoadError, load_model, load_tokenizer, resolve_model

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(spec: Any) -> bool:
    """Whether ``spec`` is a local directory holding a PEFT adapter (and not a full model)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    p = Path(spec).expanduser()
    return p.is_dir() and (p / ADAPTER_CONFIG).is_file()


def adapter_base(adapter_dir: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """The base model spec of an adapter: ``base`` if given, else its config's base_model_name_or_path."""
    p = Path(adapter_dir).expanduser()
    try:
        cfg = json.loads((p / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{p} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter directory") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{p / ADAPTER_CONFIG}: invalid JSON ({e.msg})") from None
    if base is not None:
        return str(base)
    b = cfg.get("base_model_name_or_path")
    if not b:
        raise ModelLoadError(f"adapter {p} does not name its base model (no base_model_name_or_path); pass --base")
    return str(b)


def load_adapter(adapter_dir: str | os.PathLike, base: str | os.PathLike | None = None, *, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False, allow_pickle: bool = False):
    """``(peft_model, tokenizer)``: the base loaded as memlens loads any model, with the adapter on,
    in eval mode. The tokenizer is the adapter directory's if it holds one, else the base's."""
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise ModelLoadError("loading a PEFT adapter needs peft: pip install peft")
    from peft import PeftModel

    p = Path(adapter_dir).expanduser()
    base_spec = adapter_base(p, base)
    try:
        ms = resolve_model(base_spec, allow_pickle=allow_pickle)
    except ModelLoadError as e:
        raise ModelLoadError(f"adapter {p}: its base model {base_spec} cannot be loaded ({e}); pass --base") from None
    model = load_model(ms, device=device, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if ms.gguf_file:  # a GGUF-loaded model carries a quantizer peft cannot wrap: use its dequantized weights
        dev = next(model.parameters()).device
        model = plain_copy(model).to(dev)
    has_tok = any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tok = _adapter_tokenizer(p, trust_remote_code) if has_tok else load_tokenizer(ms, trust_remote_code=trust_remote_code)
    try:
        with warnings.catch_warnings():  # peft looks for a config.json next to a GGUF base: not needed
            warnings.filterwarnings("ignore", message="Could not find a config file.*", category=UserWarning)
            peft_model = PeftModel.from_pretrained(model, str(p), is_trainable=False)
    except Exception as e:  # noqa: BLE001 - peft raises many kinds (shape mismatch, missing file, bad config): one line each
        raise ModelLoadError(f"cannot load the adapter {p} onto {base_spec}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return peft_model.eval(), tok


def _adapter_tokenizer(p: Path, trust_remote_code: bool):
    from memlens.models.loading import ModelSpec

    return load_tokenizer(ModelSpec(str(p), p), trust_remote_code=trust_remote_code)


def adapter_handles(adapter_dir: str | os.PathLike, reference: Any = "auto", *, base: str | os.PathLike | None = None,
                    options: Any = None):
    """``(target, references)`` as memlens handles for an adapter directory: the adapted model and,
    for ``reference="auto"``, the same model with its adapter disabled (``None``: no reference;
    anything else is passed through for :func:`memlens.audit` to resolve)."""
    from memlens.models.handle import LoadOptions, ModelHandle

    o = options or LoadOptions()
    peft_model, tok = load_adapter(adapter_dir, base, device=o.device, dtype=o.dtype, trust_remote_code=o.trust_remote_code,
                                   allow_pickle=o.allow_pickle)
    target = ModelHandle(peft_model, tok, name=str(adapter_dir), options=o)
    if isinstance(reference, str) and reference == "auto":
        return target, [ModelHandle(AdapterDisabled(peft_model), tok, name=f"{adapter_dir} (adapter disabled)", options=o)]
    if reference is None:
        return target, []
    return target, reference


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in a plain ``AutoModelForCausalLM.from_config`` model.

    A GGUF-loaded model carries a quantizer that refuses ``save_pretrained``; its dequantized
    weights copied into a fresh model of the same config train and save like any other.
    """
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.to(dtype=next(model.parameters()).dtype)
    return plain.eval()


class AdapterDisabled(torch.nn.Module):
    """The base model inside a ``peft`` model: ``forward``/``generate`` run with the adapter off.

    Only one copy of the base weights is in memory: the wrapper holds the peft model itself.
    ``state_dict()`` leaves the adapter's tensors out, so memlens fingerprints the wrapper by the
    base weights alone: it differs from the target's fingerprint (which includes the adapter) and
    stays the same across adapters trained on the same base, which is right for the cache.
    """

    def __init__(self, peft_model: torch.nn.Module):
        super().__init__()
        self.peft_model = peft_model
        base = peft_model.get_base_model()
        self.config = base.config
        self.generation_config = getattr(base, "generation_config", None)

    def forward(self, *args: Any, **kwargs: Any):
        with self.peft_model.disable_adapter():
            return self.peft_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any):
        with self.peft_model.disable_adapter():
            return self.peft_model.generate(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any):
        sd = super().state_dict(*args, **kwargs)
        for k in [k for k in sd if ".lora_" in k or k.startswith("lora_")]:
            del sd[k]
        return sd


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------
