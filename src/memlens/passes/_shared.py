"""What the causal and the masked pass share: buffered cache writes and the data-parallel state."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
        """Write what is buffered and wait for every write (also after an interruption: finished texts are kept;
        a further Ctrl-C or SIGTERM while it waits takes effect when the writes are done)."""
        with signals_held():
            self._close()

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                pending, self._pending = self._pending, []
                self._pool.shutdown(wait=True)
                for f in pending:
                    f.result()


def _write(batch: list[tuple[CacheNamespace, dict[str, Record]]]) -> None:
    """One flush: every namespace's shard, the pair namespace last, as one unit (:func:`signals_held`,
    which matters where this runs on the main thread). A text counts as done only when every namespace
    has it, so even a SIGKILL inside a flush re-runs that buffer's texts only."""
    with signals_held():
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
