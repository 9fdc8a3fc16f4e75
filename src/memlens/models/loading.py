"""Locating, fingerprinting and safely loading Hugging Face models and tokenizers.

Safe by default: weights load from safetensors (or GGUF); pickle-based checkpoints
(``pytorch_model.bin``) and ``trust_remote_code`` are refused unless the user asks for them.
A model spec is a local directory, a ``.gguf`` file, or a hub id (downloaded through the
Hugging Face cache; with ``HF_HUB_OFFLINE=1`` only what is cached is used).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memlens.errors import ModelLoadError  # noqa: F401  (re-exported: its old home)

log = logging.getLogger("memlens")

# A hub id with a network that never answers must fail in seconds, not hang: huggingface_hub reads
# these when it is first imported, so they are set here, before any hub call, unless the user chose.
HUB_TIMEOUT_S = 10
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(HUB_TIMEOUT_S))
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(HUB_TIMEOUT_S))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Small files that change what the model computes or how texts are tokenized; hashed whole too.
CONFIG_SUFFIXES = (".json", ".model", ".txt", ".tiktoken")
_HASH_CHUNK = 8 << 20
_MEMO_NAME = "file-hashes.json"  # under the memlens cache directory: path -> (size, mtime_ns, inode, hash)


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
    if _looks_like_path(spec_s):
        raise ModelLoadError(f"not a local path: {spec_s} (it does not exist)")
    return ModelSpec(spec_s, _download(spec_s, revision=revision, gguf_file=gguf_file, allow_pickle=allow_pickle), gguf_file)


def _looks_like_path(spec: str) -> bool:
    """True for strings that cannot be a hub id ("name" or "org/name"), so they were meant as paths."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or (os.altsep and os.altsep in spec) or spec.count("/") > 1:
        return True
    if spec.endswith((".gguf", *WEIGHT_SUFFIXES)):
        return True
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(spec)
    except Exception:  # HFValidationError: characters or a shape no hub id has
        return True
    return False


def _download(spec: str, *, revision: str | None, gguf_file: str | None, allow_pickle: bool) -> Path:
    """A hub id's files, from the Hugging Face cache or downloaded.

    Online, the repository's metadata is asked for first with a short timeout: a hub that does not
    answer (or an id that does not exist) fails here in seconds, naming the id, instead of hanging
    in the download's retries. A model already in the Hugging Face cache still loads then."""
    from huggingface_hub import HfApi, constants, snapshot_download

    patterns = ["*.json", "*.model", "*.txt", "*.safetensors", "*.tiktoken", "*.py"]
    if allow_pickle:
        patterns.append("*.bin")
    if gguf_file:
        patterns.append(gguf_file)
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_TIMEOUT_S)
    probe_error = None
    if not constants.HF_HUB_OFFLINE:
        try:
            HfApi().model_info(spec, revision=revision, timeout=timeout)
        except Exception as e:  # no network, unknown or gated repository
            probe_error = e
    try:
        local = snapshot_download(spec, revision=revision, allow_patterns=patterns, etag_timeout=timeout,
                                  local_files_only=bool(constants.HF_HUB_OFFLINE) or probe_error is not None)
    except Exception as e:
        err = probe_error or e
        msg = str(err).splitlines()[0] if str(err) else ""
        where = "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE and probe_error is None \
            else f"{type(err).__name__}: {msg}"
        raise ModelLoadError(f"cannot get model {spec!r} from the Hugging Face hub ({where}); "
                             "pass a local directory, or download it first") from None
    return Path(local)


class _FileHashMemo:
    """Whole-file content hashes, remembered by (path, size, mtime_ns, inode) so a reread costs nothing.

    Kept in memory and in ``<memlens cache dir>/file-hashes.json`` (memlens.cache.default_cache_dir:
    $MEMLENS_CACHE, else $XDG_CACHE_HOME/memlens or ~/.cache/memlens). A file rewritten in place
    changes its mtime or size, and a file replaced by another changes its inode, so a stale entry is
    never used. The memo is only ever a shortcut: losing it (or a concurrent writer overwriting it)
    costs one rehash."""

    def __init__(self) -> None:
        self._mem: dict[str, list] = {}
        self._lock = threading.Lock()

    def _file(self) -> Path:
        from memlens.cache import default_cache_dir

        return default_cache_dir() / _MEMO_NAME

    def _read_disk(self) -> dict[str, list]:
        try:
            data = json.loads(self._file().read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def hash(self, path: Path) -> str:
        st = path.stat()  # follows symlinks: the file's own size, mtime and inode
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(path.resolve())
        with self._lock:
            hit = self._mem.get(key)
            if hit is None:
                hit = self._read_disk().get(key)
            if hit is not None and list(hit[:3]) == sig:
                self._mem[key] = hit
                return str(hit[3])
        digest = _xxh3_file(path)
        with self._lock:
            self._mem[key] = [*sig, digest]
            self._save(key, [*sig, digest])
        return digest

    def _save(self, key: str, entry: list) -> None:
        from memlens.cache import _atomic_write

        f = self._file()
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            data = self._read_disk()
            data[key] = entry
            _atomic_write(f, json.dumps(data, sort_keys=True).encode())
        except OSError as e:  # a read-only cache dir only costs a rehash next time
            log.debug("file hash memo not written (%s)", e)


FILE_HASHES = _FileHashMemo()


def _xxh3_file(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return "xxh3:" + h.hexdigest()


def _hub_blob_hash(path: Path) -> str | None:
    """The content hash a Hugging Face cache snapshot already names the file by, if ``path`` is one.

    Snapshot files are symlinks to ``blobs/<name>``, where the name is the file's SHA-256 (LFS files:
    weights) or its git blob SHA-1 (small files): both are hashes of the whole content."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    name = target.name
    if target.parent.name == "blobs" and len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name):
        return f"hub:{name}"
    return None


def file_content_hash(path: Path) -> str:
    """A hash of the whole content of one file (the hub's own name for it, or xxh3-128, memoized)."""
    return _hub_blob_hash(path) or FILE_HASHES.hash(path)


def fingerprint_files(ms: ModelSpec) -> str:
    """A content fingerprint of a model's files without loading it.

    Every weight, config and tokenizer file is hashed whole, so two models that differ in one
    tensor anywhere get different fingerprints. Hashing tens of GB costs seconds to minutes once;
    the hashes are memoized (see _FileHashMemo), and a Hub snapshot's files are named by their hash.
    """
    h = hashlib.sha256()
    if ms.gguf_file:
        f = ms.path / ms.gguf_file
        h.update(f"{f.name}:{f.stat().st_size}:{file_content_hash(f)}".encode())
        return h.hexdigest()[:20]
    for f in sorted(ms.path.iterdir()):
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES + CONFIG_SUFFIXES:
            h.update(f"{f.name}:{f.stat().st_size}:{file_content_hash(f)}\n".encode())
    return h.hexdigest()[:20]


def fingerprint_module(model: torch.nn.Module) -> str:
    """Fingerprint of an in-memory model: its config and every tensor of its state dict, whole
    (name, dtype, shape and all bytes), so a change to any one value changes the fingerprint."""
    import xxhash

    h = xxhash.xxh3_128()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        if t.device.type == "meta":  # offloaded / not materialised: no values to hash
            continue
        t = t.detach()
        try:
            data = t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
        except (RuntimeError, TypeError):  # tensor subclasses (quantized weights) without a byte view
            data = t.float().cpu().numpy()
        h.update(memoryview(data).cast("B"))
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
    elif not any(_is_tokenizer_file(f.name) for f in ms.path.iterdir()):
        # transformers 5 builds an empty tokenizer here, 4.x fails with an unrelated message: say what is wrong
        raise ModelLoadError(f"{ms.label} has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab/merges, *.model); "
                             "copy them from the base model")
    try:
        tok = AutoTokenizer.from_pretrained(str(ms.path), **kwargs)
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer of {ms.label}: {type(e).__name__}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {ms.label} is a slow (Python) tokenizer; memlens needs a fast tokenizer for character offsets"
        )
    check_tokenizer(tok, ms.label)
    return tok


_PROBE = "memlens probe: Hello, world 123."


def _is_tokenizer_file(name: str) -> bool:
    # The names transformers' tokenizers load from (fast, sentencepiece, BPE, WordPiece, tiktoken).
    return name.startswith(("tokenizer", "vocab", "merges", "spiece", "sentencepiece", "special_tokens_map")) or \
        name.endswith((".model", ".tiktoken"))


def check_tokenizer(tok: Any, label: str) -> None:
    """Refuse a tokenizer that turns text into no tokens: transformers 5 builds an empty one for a model
    directory without tokenizer files, and every text would then score NaN without a word."""
    try:
        n_vocab = len(tok)
        ids = tok(_PROBE, add_special_tokens=False)["input_ids"]
    except Exception as e:
        raise ModelLoadError(f"the tokenizer of {label} does not work ({type(e).__name__}: {e})") from None
    if n_vocab <= 1 or not ids:
        raise ModelLoadError(f"the tokenizer of {label} is empty (vocabulary of {n_vocab}, a probe text gives {len(ids)} tokens): "
                             "the model directory has no tokenizer files; copy them from the base model")


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
