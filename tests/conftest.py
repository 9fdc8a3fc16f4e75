"""Shared fixtures: tiny byte-level BPE tokenizers and tiny random causal LMs saved to disk.

Everything is built offline, seeded and small, so the whole core suite runs in seconds on a
2-core CPU. Session-scoped: built once per test run.
"""
from __future__ import annotations

import os

# Never touch the network, and never write to the user's cache directories.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random  # noqa: E402
import socket  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Belt and braces: any attempt to reach a non-local host fails loudly instead of hanging or
# silently downloading (loopback stays allowed, e.g. for torch.distributed).
_LOCAL = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")
_real_connect, _real_getaddrinfo = socket.socket.connect, socket.getaddrinfo


def _no_network_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
        raise RuntimeError(f"tests must not touch the network (connect to {address!r})")
    return _real_connect(self, address)


def _no_network_getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL and host is not None:
        raise RuntimeError(f"tests must not touch the network (lookup of {host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _no_network_connect
socket.getaddrinfo = _no_network_getaddrinfo

# The models here are tiny: one thread is faster than several (no sync overhead, and no
# oversubscription on a 2-core CI runner).
torch.set_num_threads(1)

EOT = "<|endoftext|>"

WORDS = ("river stone lamp orchard violet copper harbor meadow lantern thistle quarry falcon ember willow "
         "marble cedar pebble saffron juniper tundra canyon velvet walnut hazel amber cobalt the a of and "
         "to in is was for on with as by at from").split()


def make_corpus(seed: int = 0, n: int = 80, words: int = 12) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = " ".join(rng.choice(WORDS) for _ in range(words))
        out.append(s.capitalize() + (f", code {rng.randint(100, 999)}." if i % 3 else "!\nNext line: ✓ café."))
    return out


def make_tokenizer(corpus: list[str], vocab_size: int, special: str = EOT):
    """A byte-level BPE tokenizer trained on ``corpus``, with ``special`` as bos/eos/pad (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[special], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=special, eos_token=special, pad_token=special)


def make_gpt2(vocab_size: int, seed: int, n_positions: int = 64, init: float = 0.3):
    """A tiny random GPT-2. A large init range gives peaked, varied next-token distributions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                     initializer_range=init, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def make_llama(vocab_size: int, seed: int, max_positions: int = 64, init: float = 0.3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      initializer_range=init, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@dataclass
class TinyModel:
    path: Path  # directory written with save_pretrained (safetensors) + the tokenizer
    model: torch.nn.Module
    tokenizer: object


def _save(root: Path, name: str, model, tok) -> TinyModel:
    d = root / name
    model.save_pretrained(d)  # safetensors
    tok.save_pretrained(d)
    return TinyModel(d, model, tok)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return make_tokenizer(corpus, vocab_size=320)


@pytest.fixture(scope="session")
def other_tokenizer(corpus):
    """A second tokenizer with another vocabulary (mismatched-reference path)."""
    return make_tokenizer(corpus[::2] + make_corpus(seed=7, n=40), vocab_size=290)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def gpt2(models_dir, tokenizer) -> TinyModel:
    return _save(models_dir, "gpt2", make_gpt2(len(tokenizer), seed=0), tokenizer)


@pytest.fixture(scope="session")
def gpt2_ref(models_dir, tokenizer) -> TinyModel:
    """A second GPT-2 on the same tokenizer: a paired reference."""
    return _save(models_dir, "gpt2-ref", make_gpt2(len(tokenizer), seed=1), tokenizer)


@pytest.fixture(scope="session")
def gpt2_ref2(models_dir, tokenizer) -> TinyModel:
    return _save(models_dir, "gpt2-ref2", make_gpt2(len(tokenizer), seed=2), tokenizer)


@pytest.fixture(scope="session")
def gpt2_short(models_dir, tokenizer) -> TinyModel:
    """A GPT-2 with a 32-token context, for windowing long texts."""
    return _save(models_dir, "gpt2-short", make_gpt2(len(tokenizer), seed=3, n_positions=32), tokenizer)


@pytest.fixture(scope="session")
def llama(models_dir, tokenizer) -> TinyModel:
    return _save(models_dir, "llama", make_llama(len(tokenizer), seed=4), tokenizer)


@pytest.fixture(scope="session")
def other_vocab_ref(models_dir, other_tokenizer) -> TinyModel:
    """A reference model with another tokenizer and vocabulary size."""
    return _save(models_dir, "gpt2-other-vocab", make_gpt2(len(other_tokenizer), seed=5), other_tokenizer)


@pytest.fixture(autouse=True)
def _isolated_memlens_cache(tmp_path, monkeypatch):
    """The default cache directory points into the test's tmp dir, never at ~/.cache."""
    monkeypatch.setenv("MEMLENS_CACHE", str(tmp_path / "memlens-default-cache"))
