"""The statistics pass for causal LMs: tokenize with offsets, window long texts, batch by length,
run the model(s) once, and reduce logits to per-token statistics in vocabulary-bounded chunks.

Single mode: one model -> TokenStats per text.
Paired mode: target and reference(s) sharing a vocabulary run on the same batch; besides each
model's TokenStats it records paired reductions (D_KL(q || p), log-ratio, ...) while both
models' logits are in memory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from memlens.errors import TextTooShortError  # noqa: F401  (re-exported: its old home)
from memlens.models.reductions import pair_reductions, single_model_reductions
from memlens.stats import TOKEN_FIELDS, TokenStats

log = logging.getLogger("memlens")


@dataclass
class Tokenized:
    """A text's tokens with the context token, and each token's character span."""

    ids: list[int] | np.ndarray  # context token (if any) + text tokens (numpy from the tokenizer process)
    spans: list[tuple[int, int]] | np.ndarray  # for the scored tokens, i.e. ids[first_scored:] ([n, 2] in numpy)
    first_scored: int  # 1 when a context (BOS/EOS) token is prepended, else 1 as well (first token unscored)


def context_token_id(tokenizer: Any) -> int | None:
    """The token placed before every text so its first token is scored too: BOS, else EOS."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def tokenize(tokenizer: Any, text: str, add_context_token: bool = True) -> Tokenized:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return _tokenized(tokenizer, list(enc["input_ids"]), enc["offset_mapping"], add_context_token)


def tokenize_many(tokenizer: Any, texts: Sequence[str], add_context_token: bool = True, chunk: int = 1024) -> list[Tokenized]:
    """:func:`tokenize` of every text, through the tokenizer's batch call (a fast tokenizer encodes
    a batch in Rust without the GIL, so this can run on a thread beside the model loading or the
    pass), in chunks so the intermediate Python lists stay small."""
    out: list[Tokenized] = []
    # The backend (Rust) tokenizer directly, where it truncates and pads nothing (then it is what the call
    # through transformers runs): the same ids and offsets without building a BatchEncoding, whose Python
    # work holds the GIL that the pass on the main thread needs.
    backend = _direct_backend(tokenizer)
    for lo in range(0, len(texts), chunk):
        batch = list(texts[lo:lo + chunk])
        if backend is not None:
            out.extend(_tokenized(tokenizer, e.ids, e.offsets, add_context_token)
                       for e in backend.encode_batch(batch, add_special_tokens=False))
            continue
        enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True)
        out.extend(_tokenized(tokenizer, list(ids), offs, add_context_token)
                   for ids, offs in zip(enc["input_ids"], enc["offset_mapping"]))
    return out


class TokenFeed:
    """Tokenizes ``texts[i]`` for ``i`` in ``order``, ``chunk`` texts at a time (each chunk in index order),
    in the background from the start, staying up to ``prefetch`` chunks ahead of the consumer;
    iterating yields (indices, their Tokenized).

    The pass starts on the first chunk instead of waiting for every text, and the rest is tokenized
    while the weights load and the pass runs. Where: ``process`` True, a worker process
    (:mod:`memlens._tokenize_worker`, a child process; a fast tokenizer only) encodes each chunk and hands back
    numpy arrays, so the main process's GIL, which a GPU pass's host loop needs, is never held for
    tokenizing; False, a thread here does it (the Rust encode releases the GIL, building the Python lists
    does not: on an H200 this slowed the pass from 85% to 71% of the bare forward); None (default), the
    process for more than :data:`PROCESS_MIN_TEXTS` texts of a fast tokenizer (below that, starting
    it costs more than it saves). A worker that cannot start (or dies) falls back to the thread, with a
    warning. ``timings`` gets "tokenize (background)", the tokenizing time itself (the worker's, or the
    thread's), and "wait for tokens", the time the consumer was blocked on a chunk not ready yet (with
    a GPU: the time it idled). :meth:`close` (also through ``with``) stops the work, e.g. when the pass fails."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], order: Sequence[int], chunk: int = 1024, prefetch: int = 2,
                 process: bool | None = None):
        import queue
        import threading

        order = list(order)
        # each chunk in index order: one chunk of every text then batches exactly as a pass over the whole list does
        self.chunks = [sorted(order[lo:lo + chunk]) for lo in range(0, len(order), max(1, chunk))]
        self.timings = {"tokenize (background)": 0.0, "wait for tokens": 0.0}
        self._tokenizer, self._texts, self._prefetch = tokenizer, texts, max(1, prefetch)
        fast = _direct_backend(tokenizer) is not None
        if process and not fast:
            raise ValueError("tokenizing in a worker process needs a fast tokenizer without truncation or padding")
        self.process = bool(fast and (process if process is not None else len(order) > PROCESS_MIN_TEXTS))
        self._q: queue.Queue = queue.Queue(maxsize=self._prefetch)
        self._proc: Any = None  # the tokenizer process, while it runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="memlens-tokenize", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        import time

        try:
            done = self._produce_in_process() if self.process else 0
            for idx in self.chunks[done:]:
                t0 = time.perf_counter()
                item = (idx, tokenize_many(self._tokenizer, [self._texts[i] for i in idx], chunk=len(idx) or 1))
                self.timings["tokenize (background)"] += time.perf_counter() - t0
                if not self._put(item):
                    return
        except BaseException as e:  # re-raised in the consumer, where the pass reports it
            self._put(e)

    def _produce_in_process(self) -> int:
        """Chunks through the worker process (:mod:`memlens._tokenize_worker`); returns how many were delivered
        (all of them, unless the worker broke or could not start: the thread goes on from there)."""
        import pickle
        import threading

        from memlens._io import worker_process

        ctx_id = context_token_id(self._tokenizer)
        try:
            proc = worker_process("memlens._tokenize_worker")
        except OSError as e:
            log.warning("tokenizing on a thread: the tokenizer process did not start (%s)", e)
            return 0
        self._proc = proc
        if self._stop.is_set():  # closed while it started: close() saw no process to stop
            proc.kill()

        def feed() -> None:
            # on a thread of its own: the requests go in while results come out, so neither pipe can fill up
            # with both sides waiting; the worker takes one chunk at a time
            try:
                pickle.dump(_direct_backend(self._tokenizer).to_str(), proc.stdin)
                for idx in self.chunks:
                    if self._stop.is_set():
                        break
                    pickle.dump([self._texts[i] for i in idx], proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.flush()
            except (OSError, ValueError):  # the worker died or was stopped: the reader sees it too
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        feeder = threading.Thread(target=feed, name="memlens-tokenize-feed", daemon=True)
        feeder.start()
        done = 0
        try:
            for idx in self.chunks:
                try:
                    status, payload = pickle.load(proc.stdout)
                except (EOFError, OSError, pickle.UnpicklingError) as e:
                    if not self._stop.is_set():
                        log.warning("tokenizing on a thread from chunk %d on: the tokenizer process failed (%s)", done + 1,
                                    type(e).__name__)
                    return done
                if status != "ok":
                    raise RuntimeError(f"tokenizing failed: {payload}")
                ids, offsets, lengths, seconds = payload
                self.timings["tokenize (background)"] += seconds
                if not self._put((idx, _tokenized_arrays(ids, offsets, lengths, ctx_id))):
                    return done
                done += 1
            return done
        finally:
            if proc.poll() is None and done < len(self.chunks):
                proc.kill()
            feeder.join()
            proc.wait()
            proc.stdout.close()

    def __iter__(self) -> Iterator[tuple[list[int], list[Tokenized]]]:
        import time

        for _ in self.chunks:
            t0 = time.perf_counter()
            item = self._q.get()
            self.timings["wait for tokens"] += time.perf_counter() - t0
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # the thread may be waiting on its pipe
        self._thread.join()

    def __enter__(self) -> "TokenFeed":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# both tokenizing paths (in process, and from the tokenizer process's arrays) refuse such a text alike
_TOO_SHORT = "text has fewer than 2 tokens and the tokenizer has no BOS/EOS token to score it after"
PROCESS_MIN_TEXTS = 2048  # TokenFeed: more texts than this go through the tokenizer process by default


def _direct_backend(tokenizer: Any) -> Any:
    """The fast tokenizer's Rust backend where it truncates and pads nothing (then encoding with it is what
    the call through transformers runs), else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    ok = backend is not None and getattr(tokenizer, "is_fast", False) and backend.truncation is None and backend.padding is None
    return backend if ok else None


def _tokenized_arrays(ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ctx: int | None) -> list[Tokenized]:
    """:func:`_tokenized` of texts encoded together (the worker's concatenated arrays): ids and spans are numpy
    slices of them, the context token put before every text's ids in one insert."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out: list[Tokenized] = []
    if ctx is not None:
        with_ctx = np.insert(ids, starts, ctx)
        for j, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            out.append(Tokenized(with_ctx[a + j:b + j + 1], offsets[a:b], 1))
        return out
    for a, b in zip(starts.tolist(), ends.tolist()):
        if b - a < 2:
            raise TextTooShortError(_TOO_SHORT)
        out.append(Tokenized(ids[a:b], offsets[a + 1:b], 1))
    return out


def _tokenized(tokenizer: Any, ids: list[int], offsets: Sequence, add_context_token: bool) -> Tokenized:
    # a fast tokenizer's offsets are already tuples of ints: convert only what is not (one Python call per token is
    # a good part of tokenizing)
    spans = offsets if isinstance(offsets, list) and (not offsets or type(offsets[0]) is tuple) else [tuple(map(int, o)) for o in offsets]
    ctx = context_token_id(tokenizer) if add_context_token else None
    if ctx is not None:
        return Tokenized([ctx] + ids, spans, 1)
    if len(ids) < 2:
        raise TextTooShortError(_TOO_SHORT)
    return Tokenized(ids, spans[1:], 1)


@dataclass
class Window:
    """One model input: ids[start:end] of a text; predictions scored for tokens [score_from, end)."""

    text_index: int
    start: int
    end: int
    score_from: int


def make_windows(n_ids: int, text_index: int, max_len: int, stride: int) -> list[Window]:
    """Cover tokens 1..n_ids-1 so each is scored exactly once, with at least max_len - stride
    tokens of left context once the text outgrows the window."""
    if n_ids <= max_len:
        return [Window(text_index, 0, n_ids, 1)]
    if not 0 < stride <= max_len - 1:
        raise ValueError(f"stride must be in [1, {max_len - 1}], got {stride}")
    wins = [Window(text_index, 0, max_len, 1)]
    while wins[-1].end < n_ids:
        prev_end = wins[-1].end
        end = min(prev_end + stride, n_ids)
        wins.append(Window(text_index, end - max_len, end, prev_end))
    return wins


def batches_by_length(windows: list[Window], batch_size: int, max_tokens: int | None) -> Iterator[list[Window]]:
    """Longest first, so padding is small and a memory error shows up on the first batch."""
    order = sorted(windows, key=lambda w: -(w.end - w.start))
    batch: list[Window] = []
    for w in order:
        longest = (batch[0].end - batch[0].start) if batch else (w.end - w.start)
        if batch and (len(batch) >= batch_size or (max_tokens and longest * (len(batch) + 1) > max_tokens)):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


def auto_batch_size(device: torch.device, max_len: int, n_params: int) -> int:
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    # Activations and logits of one sequence cost roughly a few KB per token per 100M params.
    per_seq = max_len * (4096 + n_params / 25_000)
    return int(max(1, min(256, free * 0.5 // per_seq)))


def _reduce_in_chunks(
    logits_list: list[torch.Tensor], flat_index: torch.Tensor, targets: torch.Tensor,
    chunk: int, fn: Callable[..., dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Apply ``fn(*[logits rows], targets)`` over contiguous chunks of the flattened [B*L, V]
    logits, then keep the rows in ``flat_index``. Results stay on the model's device.

    Contiguous slices are views, so no gather copies the logits; the few padded positions that
    are reduced for nothing cost less than gathering (batches are bucketed by length). Every
    chunk has the same number of rows (the last one overlaps its predecessor), so a compiled
    reduction sees one shape and is compiled once.
    """
    flat = [lg.reshape(-1, lg.shape[-1]) for lg in logits_list]
    n = flat[0].shape[0]
    parts: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, n, chunk):
        start = max(0, min(lo, n - chunk))  # the last chunk is shifted back to full size
        sl = slice(start, min(start + chunk, n))
        for k, v in fn(*[f[sl] for f in flat], targets[sl]).items():
            parts.setdefault(k, []).append(v[lo - start:])
    return {k: torch.cat(v)[flat_index] for k, v in parts.items()}


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Start the device-to-host copy without waiting for it: one pinned buffer per batch.

    Per-token outputs of the same length are stacked as float64 (exact for ranks and token
    ids) so one copy moves them all; others are copied one by one."""
    if not tensors or next(iter(tensors.values())).device.type != "cuda":
        return tensors
    flat = {k: t for k, t in tensors.items() if t.dim() == 1}
    rest = {k: t for k, t in tensors.items() if t.dim() != 1}
    out: dict[str, torch.Tensor] = {}
    if flat:
        stacked = torch.stack([t.double() for t in flat.values()])
        dst = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
        dst.copy_(stacked, non_blocking=True)
        out.update({k: dst[i] for i, k in enumerate(flat)})
    for k, t in rest.items():
        dst = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        dst.copy_(t, non_blocking=True)
        out[k] = dst
    return out


class CausalScorer:
    """Runs the statistics pass of one target model, optionally paired with reference models.

    ``models[0]`` is the target; the rest are references sharing the target's tokenizer
    (paired mode). The pass returns, per text, a dict with a TokenStats per model and, in paired
    mode, the paired reductions aligned to the text's tokens.
    """

    def __init__(self, models: Sequence[torch.nn.Module], tokenizer: Any, *, batch_size: int | None = None,
                 max_length: int | None = None, stride: int | None = None, max_tokens_per_batch: int | None = None,
                 vocab_chunk_rows: int = 1024, temperature: float = 1.0, pair_reduction_names: tuple[str, ...] = ("informia",),
                 pair_settings: dict | None = None, progress: bool = True, compile_reductions: bool | None = None):
        from memlens.models.loading import context_length

        self.models = list(models)
        self.tokenizer = tokenizer
        self.device = next(self.models[0].parameters()).device
        limit = min(context_length(m, tokenizer) for m in self.models)
        self.max_length = min(max_length or limit, limit)
        if self.max_length < 2:
            raise ValueError("max_length must be at least 2")
        self.stride = stride or max(1, self.max_length // 2)
        n_params = sum(p.numel() for p in self.models[0].parameters())
        self.batch_size = batch_size or auto_batch_size(self.device, self.max_length, n_params * len(self.models))
        self.max_tokens_per_batch = max_tokens_per_batch
        self.vocab_chunk_rows = vocab_chunk_rows
        self.temperature = temperature
        self.pair_reduction_names = tuple(pair_reduction_names)
        self.pair_settings = dict(pair_settings or {})
        self.progress = progress
        self.desc = "scoring"  # the progress bar's name; compute_stats names what is scored
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        # On GPUs, torch.compile fuses the vocabulary reductions into a few kernels that read each
        # chunk of logits once or twice instead of a dozen times (see benchmarks/throughput.py).
        if compile_reductions is None:
            compile_reductions = self.device.type == "cuda"
        self._single_fn = single_model_reductions
        self._pair_impl = pair_reductions
        if compile_reductions:
            self._single_fn = torch.compile(single_model_reductions)
            self._pair_impl = torch.compile(pair_reductions)

    @property
    def paired(self) -> bool:
        return len(self.models) > 1

    def settings(self) -> dict:
        """What changes the numbers (part of the cache key); batch size does not."""
        s = {"max_length": self.max_length, "stride": self.stride, "context_token": context_token_id(self.tokenizer)}
        if self.paired:
            s.update(temperature=self.temperature, pair_reductions=list(self.pair_reduction_names), pair_settings=self.pair_settings)
        return s

    @torch.inference_mode()
    def score(self, texts: Sequence[str], on_batch_done: Callable[[dict[int, dict]], None] | None = None, *,
              tokenized: Sequence[Tokenized] | None = None, feed: Iterable[tuple[Sequence[int], Sequence[Tokenized]]] | None = None,
              keep: bool = True) -> dict[int, dict]:
        """Score texts; returns {text index: {"stats": [TokenStats per model], "pair": {name: array}}}.

        ``on_batch_done`` receives each text's result as soon as all of its windows are done,
        so a caller can persist progress (and a killed run loses at most one batch).
        ``tokenized``: the texts' :func:`tokenize_many`, when the caller has it already;
        ``feed``: the texts being tokenized in chunks (a :class:`TokenFeed` of ``texts``), see :meth:`score_stream`;
        ``keep``: see :meth:`score_tokenized`.
        """
        if feed is not None:
            return self.score_stream(feed, on_batch_done, keep=keep)
        toks = tokenize_many(self.tokenizer, texts) if tokenized is None else tokenized
        return self.score_tokenized(toks, on_batch_done, keep=keep)

    @torch.inference_mode()
    def score_tokenized(self, toks: Sequence[Tokenized], on_batch_done: Callable[[dict[int, dict]], None] | None = None,
                        keep: bool = True) -> dict[int, dict]:
        """:meth:`score` on texts already tokenized (benchmarks feed token ids directly).

        ``keep=False``: results go to ``on_batch_done`` only and are not collected (memory stays
        bounded by the batches in flight); the returned dict is then empty.
        """
        return self.score_stream([(list(range(len(toks))), list(toks))], on_batch_done, keep=keep)

    @torch.inference_mode()
    def score_stream(self, chunks: Iterable[tuple[Sequence[int], Sequence[Tokenized]]],
                     on_batch_done: Callable[[dict[int, dict]], None] | None = None, keep: bool = True) -> dict[int, dict]:
        """Score texts that arrive tokenized in chunks of (text indices, Tokenized), e.g. from
        :class:`TokenFeed` on a background thread, so the pass starts before every text is tokenized.

        Windows of the chunks that have arrived wait in a pool; full batches are taken from it longest
        first and the rest waits for the next chunk (feed chunks longest texts first and the batches are
        nearly those of one global sort). One chunk of every text gives exactly the batches of a global
        sort by length. Results are keyed by the chunks' text indices.

        Batches run longest first, so the first batch is the largest: if it runs out of memory, the
        batch size is lowered (accelerate's ``find_executable_batch_size``) and the pass goes on
        with the smaller size; nothing has been delivered before that, so no text is scored twice.
        """
        from accelerate.utils import find_executable_batch_size

        from memlens._progress import progress_bar as tqdm

        toks: dict[int, Tokenized] = {}
        pending: dict[int, int] = {}
        partial: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}
        results: dict[int, dict] = {}
        pool: list[Window] = []  # windows that arrived and are not in a batch yet
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # the average rate: batches run longest first, a recent rate would mislead the ETA; the total grows as chunks arrive
        bar = tqdm(total=0, unit="tok", desc=self.desc, disable=not self.progress, leave=False, smoothing=0)
        chunk_iter = iter(chunks)

        def pull() -> bool:
            """Add the next chunk's windows to the pool; False when the stream is done."""
            nxt = next(chunk_iter, None)
            if nxt is None:
                return False
            for i, tk in zip(*nxt):
                if i in toks:
                    raise ValueError(f"text index {i} arrived twice")
                toks[i] = tk
                wins = make_windows(len(tk.ids), i, self.max_length, self.stride)
                pending[i], partial[i] = len(wins), []
                pool.extend(wins)
                bar.total += sum(w.end - w.score_from for w in wins)
            bar.refresh()
            return True

        def take(batch_size: int, final: bool) -> list[list[Window]]:
            """Batches from the pool, longest first; unless ``final``, a short last one stays in the pool for the next chunk."""
            batches = list(batches_by_length(pool, batch_size, self.max_tokens_per_batch))
            pool.clear()
            if not final and batches and len(batches[-1]) < batch_size:
                pool.extend(batches.pop())
            return batches

        def deliver(done: dict[int, dict]) -> None:
            if keep:
                results.update(done)
            if on_batch_done and done:
                on_batch_done(done)

        def reduce() -> int:
            self.batch_size = max(self.batch_size // 2, 0)
            log.warning("out of memory on the first batch: batch size lowered to %d", self.batch_size)
            return self.batch_size

        more = True
        while more and len(pool) < self.batch_size:  # enough windows for a full first batch (or every text)
            more = pull()
        first_pool = list(pool)

        @find_executable_batch_size(starting_batch_size=self.batch_size, reduce_batch_size_fn=reduce)
        def first_batch(batch_size: int):
            self.batch_size = batch_size
            pool[:] = first_pool
            batches = take(batch_size, final=not more)
            return batches, (self._launch(batches[0], toks, pad_id) if batches else None)

        batches, launched = first_batch()
        # One batch in flight: while the GPU works on batch i, the CPU unpacks batch i - 1 (and takes the next chunk).
        in_flight = (batches[0], launched) if batches else None
        queue_ = batches[1:]
        while True:
            for batch in queue_:
                launched = self._launch(batch, toks, pad_id)
                self._finish(*in_flight, toks, partial, pending, bar, deliver)
                in_flight = (batch, launched)
            if not more and not pool:
                break
            more = more and pull()
            queue_ = take(self.batch_size, final=not more)
        if in_flight is not None:
            self._finish(*in_flight, toks, partial, pending, bar, deliver)
        bar.close()
        return results

    def _pair_fn(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        *logits, targets = args
        return self._pair_impl(logits[0], list(logits[1:]), targets, self.pair_reduction_names, self.temperature, **self.pair_settings)

    def _launch(self, batch: list[Window], toks: Sequence[Tokenized], pad_id: int):
        """Queue the forward passes and reductions of one batch; returns host tensors being filled."""
        width = max(w.end - w.start for w in batch)
        ids_np = np.full((len(batch), width), pad_id, dtype=np.int64)
        mask_np = np.zeros((len(batch), width), dtype=np.int64)
        index = []
        for r, w in enumerate(batch):
            seq = toks[w.text_index].ids[w.start:w.end]
            ids_np[r, : len(seq)] = seq
            mask_np[r, : len(seq)] = 1
            # logits at position p predict token p + 1 (positions relative to the window)
            index.append(r * width + np.arange(w.score_from - w.start - 1, w.end - w.start - 1))
        # the target of position p is token p + 1; the last position's target is a dummy
        tgt_np = np.concatenate([ids_np[:, 1:], ids_np[:, :1]], axis=1).reshape(-1)
        dev = self.device
        nb = dev.type == "cuda"
        ids = torch.from_numpy(ids_np).to(dev, non_blocking=nb)
        tgt = torch.from_numpy(tgt_np).to(dev, non_blocking=nb)
        flat_index = torch.from_numpy(np.concatenate(index)).to(dev, non_blocking=nb)
        # A batch without padding (length bucketing makes most of them so) runs with no mask: an
        # all-ones mask changes nothing but makes transformers check it on the host, a device sync
        # that would stall the batch in flight.
        mask = None if mask_np.all() else torch.from_numpy(mask_np).to(dev, non_blocking=nb)
        logits = [m(input_ids=ids, attention_mask=mask).logits for m in self.models]
        out: dict[str, torch.Tensor] = {}
        for j, lg in enumerate(logits):
            for k, v in _reduce_in_chunks([lg], flat_index, tgt, self.vocab_chunk_rows, self._single_fn).items():
                out[f"m{j}:{k}"] = v
        if self.paired:
            v = min(lg.shape[-1] for lg in logits)  # padded vocabularies may differ in length
            for k, t in _reduce_in_chunks([lg[..., :v] for lg in logits], flat_index, tgt, self.vocab_chunk_rows, self._pair_fn).items():
                out[f"pair:{k}"] = t
        del logits
        host = _to_host(out)
        event = None
        if nb:
            event = torch.cuda.Event()
            event.record()
        return host, event

    def _finish(self, batch, launched, toks, partial, pending, bar, deliver) -> None:
        """Wait for one batch's numbers, split them back into windows, assemble finished texts."""
        host, event = launched
        if event is not None:
            event.synchronize()
        arrays = {k: t.numpy() for k, t in host.items()}
        offset = 0
        for w in batch:
            n = w.end - w.score_from
            partial[w.text_index].append((w.start, {k: a[offset:offset + n] for k, a in arrays.items()}))
            offset += n
            pending[w.text_index] -= 1
            bar.update(n)
        done = {i: self._assemble(toks[i], partial.pop(i)) for i in {w.text_index for w in batch} if pending[i] == 0}
        deliver(done)

    def _assemble(self, tk: Tokenized, parts: list[tuple[int, dict[str, np.ndarray]]]) -> dict:
        parts.sort(key=lambda x: x[0])
        merged = {k: np.concatenate([p[k] for _, p in parts]) for k in parts[0][1]}
        spans = np.array(tk.spans, dtype=np.int64).reshape(-1, 2)
        token_ids = np.array(tk.ids[1:], dtype=np.int64)
        stats = []
        for j in range(len(self.models)):
            stats.append(TokenStats(
                token_ids=token_ids, span_start=spans[:, 0], span_end=spans[:, 1],
                **{k: merged[f"m{j}:{k}"] for k in TOKEN_FIELDS if f"m{j}:{k}" in merged},
            ))
        pair = {k[5:]: v for k, v in merged.items() if k.startswith("pair:")}
        return {"stats": stats, "pair": pair}
