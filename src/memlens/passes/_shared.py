"""What the causal and the masked pass share: buffered cache writes and the process group."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Iterator

import torch

from memlens.cache import CacheNamespace, Record


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside the block take effect when it ends, so a flush of the
    paired pass (the target's, each reference's and the pair's shards) is never cut in two. Only in
    the main thread, where Python runs signal handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in held}
    for s in held:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # now handled as it would have been (KeyboardInterrupt, exit)


class Flusher:
    """Buffers finished texts and writes them to their namespaces every ``every`` texts; one flush
    writes every namespace's shard with signals held (:func:`signals_held`). The pair namespace comes
    last, and a text counts as done only when every namespace has it, so a crash inside a flush
    (SIGKILL) re-runs that buffer's texts only."""

    def __init__(self, spaces: list[CacheNamespace], every: int):
        self.spaces, self.every = spaces, every
        self.buf: list[dict[str, Record]] = [dict() for _ in spaces]
        self.last = time.monotonic()

    def add(self, per_space: list[dict[str, Record]]) -> None:
        for b, recs in zip(self.buf, per_space):
            b.update(recs)
        if len(self.buf[0]) >= self.every or time.monotonic() - self.last > 120:
            self.flush()

    def flush(self) -> None:
        with signals_held():
            for ns, b in zip(self.spaces, self.buf):
                ns.put(b)
                b.clear()
            self.last = time.monotonic()


def process_group() -> Any:
    """torch.distributed, initialised as torchrun set it up (NCCL on GPUs, Gloo on CPUs), or None
    when this is a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist
