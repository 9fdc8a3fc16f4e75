"""Locating, fingerprinting and safely loading Hugging Face models and tokenizers.

Safe by default: weights load from safetensors (or GGUF); pickle-based checkpoints
(``pytorch_model.bin``) and ``trust_remote_code`` are refused unless the user asks for them.
A model spec is a local directory, a ``.gguf`` file, or a hub id (downloaded through the
Hugging Face cache; with ``HF_HUB_OFFLINE=1`` only what is cached is used).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memlens.errors import ModelLoadError  # noqa: F401  (re-exported: its old home)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_HASH_EDGE = 1 << 20  # bytes hashed from each end of a weight file


@dataclass
class ModelSpec:
    """Where a model lives, resolved to local files."""

    spec: str  # what the user passed
    path: Path  # local directory (or the directory of a gguf file)
    gguf_file: str | None = None

    @property
    def label(self) -> str:
        return self.spec if not self.gguf_file else f"{self.path}/{self.gguf_file}"


def resolve_model(spec: str | os.PathLike, *, gguf_file: str | None = None, revision: str | None = None,
                  allow_pickle: bool = False) -> ModelSpec:
    """Resolve a directory, a .gguf file or a hub id to local files (downloading a hub id)."""
    spec_s = str(spec)
    p = Path(spec_s).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ModelLoadError(f"{p} is a file; pass a model directory, a .gguf file or a hub id")
        return ModelSpec(spec_s, p.parent, p.name)
    if p.is_dir():
        if gguf_file and not (p / gguf_file).is_file():
            raise ModelLoadError(f"no GGUF file {gguf_file!r} in {p}")
        if not gguf_file and not (p / "config.json").is_file():
            ggufs = sorted(x.name for x in p.glob("*.gguf"))
            hint = f" (it holds {ggufs[0]}: pass --gguf-file {ggufs[0]})" if ggufs else ""
            raise ModelLoadError(f"{p} has no config.json, so it is not a Hugging Face model directory{hint}")
        return ModelSpec(spec_s, p, gguf_file)
    # Hub ids are "name" or "org/name"; anything else that does not exist is a missing path.
    if spec_s.startswith((".", "/", "~")) or spec_s.count("/") > 1 or spec_s.endswith(".gguf"):
        raise ModelLoadError(f"model path {spec_s} does not exist")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.model", "*.txt", "*.safetensors", "*.tiktoken", "*.py"]
        if allow_pickle:
            patterns.append("*.bin")
        if gguf_file:
            patterns.append(gguf_file)
        local = snapshot_download(spec_s, revision=revision, allow_patterns=patterns)
    except Exception as e:  # offline, unknown repo, gated repo...
        raise ModelLoadError(
            f"cannot get model {spec_s!r} from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "pass a local directory, or download it first"
        ) from None
    return ModelSpec(spec_s, Path(local), gguf_file)


def _hash_file_edges(path: Path, h: "hashlib._Hash") -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(_HASH_EDGE))
        if size > 2 * _HASH_EDGE:
            f.seek(-_HASH_EDGE, os.SEEK_END)
            h.update(f.read(_HASH_EDGE))


def fingerprint_files(ms: ModelSpec) -> str:
    """A content fingerprint of a model's files without loading it.

    Config and tokenizer files are hashed whole; each weight file by its name, size and its first
    and last MiB (hashing tens of GB whole would cost more than scoring a small audit).
    """
    h = hashlib.sha256()
    if ms.gguf_file:
        _hash_file_edges(ms.path / ms.gguf_file, h)
        return h.hexdigest()[:20]
    for f in sorted(ms.path.iterdir()):
        if not f.is_file():
            continue
        if f.suffix in WEIGHT_SUFFIXES:
            _hash_file_edges(f, h)
        elif f.suffix in (".json", ".model", ".txt", ".tiktoken"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:20]


def fingerprint_module(model: torch.nn.Module) -> str:
    """Fingerprint of an in-memory model: config, parameter names, shapes and leading values."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def fingerprint_tokenizer(tokenizer: Any) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id]).encode())
    return h.hexdigest()[:20]


def _check_safe_weights(ms: ModelSpec, allow_pickle: bool) -> None:
    if ms.gguf_file:
        return
    names = [f.name for f in ms.path.iterdir() if f.is_file()]
    has_safe = any(n.endswith(".safetensors") for n in names)
    has_pickle = any(n.endswith(PICKLE_SUFFIXES) for n in names)
    if not has_safe and has_pickle and not allow_pickle:
        raise ModelLoadError(
            f"{ms.label} has only pickle-based weights ({', '.join(n for n in names if n.endswith(PICKLE_SUFFIXES))}); "
            "loading them can run arbitrary code. Convert them to safetensors, or pass --allow-pickle if you trust the files"
        )
    if not has_safe and not has_pickle:
        raise ModelLoadError(f"{ms.label} holds no weight files")


def _need_gguf() -> None:
    missing = [m for m in ("gguf", "accelerate") if _missing(m)]
    if missing:
        raise ModelLoadError(f"loading GGUF models needs {' and '.join(missing)}: pip install 'memlens[gguf]' "
                             f"(or pip install {' '.join(missing)})")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def load_tokenizer(ms: ModelSpec, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if ms.gguf_file:
        _need_gguf()
        kwargs["gguf_file"] = ms.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(str(ms.path), **kwargs)
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer of {ms.label}: {type(e).__name__}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {ms.label} is a slow (Python) tokenizer; memlens needs a fast tokenizer for character offsets"
        )
    return tok


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return pick_device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA GPU")
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun process
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory and doubles speed on GPUs; CPU bf16 matmuls are slow on most CPUs.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def load_model(ms: ModelSpec, *, auto_class: str = "AutoModelForCausalLM", device: str = "auto", dtype: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False, device_map: str | None = None) -> torch.nn.Module:
    """Load weights for inference (eval mode, no grad). ``device_map`` spreads a big model over GPUs."""
    import transformers

    _check_safe_weights(ms, allow_pickle)
    dev = pick_device(device)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": pick_dtype(dtype, dev)}
    if ms.gguf_file:
        _need_gguf()
        kwargs["gguf_file"] = ms.gguf_file
    elif not allow_pickle:
        kwargs["use_safetensors"] = True
    if device_map:
        kwargs["device_map"] = device_map
    cls = getattr(transformers, auto_class)
    try:
        model = cls.from_pretrained(str(ms.path), **kwargs)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelLoadError(f"{ms.label} needs custom code from the model repository; "
                                 "pass --trust-remote-code if you trust it") from None
        raise ModelLoadError(f"cannot load {ms.label} as {auto_class}: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"cannot load {ms.label} as {auto_class}: {type(e).__name__}: {e}") from None
    if not device_map:
        model.to(dev)
    model.eval()
    return model


def context_length(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """The longest input the model takes, from its config."""
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    if isinstance(v, int) and 0 < v < 1_000_000:
        return v
    return 2048
