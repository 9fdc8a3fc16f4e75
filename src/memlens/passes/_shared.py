"""What the causal and the masked pass share: buffered cache writes and the process group."""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from memlens.cache import CacheNamespace, Record


class Flusher:
    """Buffers finished texts and writes them to their namespaces every ``every`` texts."""

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
