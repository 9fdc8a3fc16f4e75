"""What the causal and the masked pass share: buffered cache writes and the data-parallel state."""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from memlens.cache import CacheNamespace, Record


class Flusher:
    """Buffers finished texts and writes them to their namespaces every ``every`` texts.

    The writes (Parquet encoding, hashing, fsync) run on one background thread: pyarrow and
    hashlib release the GIL, so the next batches keep the GPU busy meanwhile. One thread keeps
    the shards in order; :meth:`close` waits for them and re-raises a failed write."""

    def __init__(self, spaces: list[CacheNamespace], every: int, background: bool = True):
        self.spaces, self.every = spaces, every
        self.buf: list[dict[str, Record]] = [dict() for _ in spaces]
        self.last = time.monotonic()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="memlens-cache") if background else None
        self._pending: list[Future] = []

    def add(self, per_space: list[dict[str, Record]]) -> None:
        for b, recs in zip(self.buf, per_space):
            b.update(recs)
        if len(self.buf[0]) >= self.every or time.monotonic() - self.last > 120:
            self.flush()

    def flush(self) -> None:
        batch = [(ns, dict(b)) for ns, b in zip(self.spaces, self.buf) if b]
        for b in self.buf:
            b.clear()
        self.last = time.monotonic()
        if not batch:
            return
        if self._pool is None:
            _write(batch)
            return
        for f in [f for f in self._pending if f.done()]:
            f.result()  # a failed write raises here, in the pass
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(_write, batch))

    def close(self) -> None:
        """Write what is buffered and wait for every write (also after an interruption: finished texts are kept)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                pending, self._pending = self._pending, []
                self._pool.shutdown(wait=True)
                for f in pending:
                    f.result()


def _write(batch: list[tuple[CacheNamespace, dict[str, Record]]]) -> None:
    for ns, recs in batch:
        ns.put(recs)


def distributed_state() -> Any:
    """accelerate's ``PartialState`` when this is one of several processes (``torchrun``,
    ``accelerate launch``), else None. It sets up the process group (NCCL on GPUs, Gloo on CPUs)
    and gives each process its GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state if state.num_processes > 1 else None


def is_main_process() -> bool:
    """False on every process of a data-parallel run but the first: those only score their share."""
    state = distributed_state()
    return state is None or state.is_main_process


def broadcast_from_main(obj: Any) -> Any:
    """``obj`` as the main process has it, on every process (unchanged in a single process)."""
    state = distributed_state()
    if state is None:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]
