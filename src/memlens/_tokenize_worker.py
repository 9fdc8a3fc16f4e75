"""Tokenization in a process of its own, for :class:`memlens.models.causal.TokenFeed`.

A fast tokenizer encodes in Rust without the GIL, but turning its encodings into Python lists
(ids, a tuple per offset) holds the GIL for ~1 s per million tokens, and on a GPU the pass's host
loop on the main thread needs that GIL: on an H200 (135M shape, 20k texts) a tokenizing thread
slowed the pass from 85% to 71% of the bare forward. Here a child process (``python -m
memlens._tokenize_worker``, started by :func:`memlens._io.worker_process`: it imports only numpy and
tokenizers, never torch, and does not re-run the caller's script) encodes each chunk and hands back
three numpy arrays; the main process only slices them.

Protocol, pickled on the pipes (memlens' own child, never user files): stdin gets the tokenizer's
JSON (``backend_tokenizer.to_str()``: the same normalizer, pre-tokenizer, model and added tokens, so
the same ids and offsets), then one list of texts per chunk; stdout gets, per chunk in order,
``("ok", (ids, offsets, lengths, seconds))`` or ``("error", message)``. Only the plain encode (no
special tokens, no truncation, no padding) runs here, as the in-process path does."""
from __future__ import annotations

import pickle
import sys
import time
from typing import Any

import numpy as np

_TOKENIZER: Any = None


def init(tokenizer_json: str) -> None:
    """Build the tokenizer once, from its JSON."""
    global _TOKENIZER
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_str(tokenizer_json)


def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(ids [N] int64, offsets [N, 2] int64, tokens per text [len(texts)] int64) of the texts, concatenated,
    and the seconds it took."""
    t0 = time.perf_counter()
    encs = _TOKENIZER.encode_batch(texts, add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in encs], dtype=np.int64)
    if not len(encs) or not lengths.sum():
        return np.zeros(0, np.int64), np.zeros((0, 2), np.int64), lengths, time.perf_counter() - t0
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encs])
    offsets = np.concatenate([np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in encs])
    return ids, offsets, lengths, time.perf_counter() - t0


def main() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops this worker itself (TokenFeed.close kills it,
    # and a parent that dies closes the pipe: EOF below), so no traceback of its own on the terminal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    init(pickle.load(stdin))
    while True:
        try:
            texts = pickle.load(stdin)
        except EOFError:  # the parent closed the pipe: every chunk is done, or it stopped
            return
        try:
            out: tuple = ("ok", encode(texts))
        except Exception as e:  # the parent raises it where the pass reports errors
            out = ("error", f"{type(e).__name__}: {e}")
        pickle.dump(out, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    main()
