"""From models and texts to per-token statistics, through the cache.

This is the only place a causal model runs. It decides which texts are missing from the cache,
runs the target and references that share its tokenizer in one paired pass (so token-level
InfoRMIA gets D_KL(q || p)), runs references with another vocabulary on their own and aligns
them to the target's tokens by character spans, and writes results back in shards as it goes,
so a killed run resumes where it stopped.

Under ``torchrun``/``accelerate launch`` each process scores its share of the missing texts
(data parallel over texts through accelerate's ``PartialState``); only the main process reads the
cache and goes on to the attacks, the others are done after their share.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from memlens.cache import CacheNamespace, Record, StatsCache, text_hash
from memlens.errors import CacheMissError
from memlens.models.handle import LoadOptions, ModelHandle  # noqa: F401  (LoadOptions: re-exported beside the pass)
from memlens.passes._shared import Flusher, broadcast_from_main, distributed_state, is_main_process
from memlens.stats import TOKEN_FIELDS, ReferenceView, TokenComparison, TokenStats

log = logging.getLogger("memlens")


@dataclass
class PassSettings:
    batch_size: int | None = None
    max_length: int | None = None
    stride: int | None = None
    temperature: float = 1.0
    vocab_chunk_rows: int = 1024
    flush_every: int = 256  # texts buffered before a cache shard is written
    tokenize_chunk: int = 1024  # texts tokenized at a time by the background tokenizer that feeds the pass
    tokenize_process: bool | None = None  # tokenize in a worker process (None: for > 2,048 texts; memlens.models.causal.TokenFeed)
    progress: bool = True
    cache_only: bool = False  # refuse to run a model (``memlens attack``)
    # paired reductions of the target/reference pass (memlens.models.reductions.PAIR_REDUCTIONS) and their
    # settings; "ltmia" (with its k) is added when the ltmia attack runs
    pair_reductions: tuple[str, ...] = ("informia",)
    pair_settings: dict = field(default_factory=dict)

    def key(self) -> dict:
        return {"max_length": self.max_length, "stride": self.stride}


@dataclass
class StatsBundle:
    """Statistics of a list of texts: target, each reference, and the token comparison."""

    target: list[TokenStats]
    references: list[ReferenceView]
    comparison: TokenComparison | None
    computed: int = 0  # texts a model actually ran on in this call
    notes: list[str] = field(default_factory=list)
    # per text, the paired pass's reductions ({name: array}); None without a paired pass
    pair_records: list[dict] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of this call (results.json "timings")


# ``context`` is the shortest context of the models that ran together: a paired pass windows long
# texts to it, so the target's statistics from a pass paired with a shorter-context reference
# differ from a target-only pass and must not share its key.
def _single_key(h: ModelHandle, s: PassSettings, context: int) -> dict:
    return {"kind": "causal", "model": h.fingerprint, "load": h.numerics, "tokenizer": h.tokenizer_fingerprint, "context": context,
            **s.key()}


def _pair_key(t: ModelHandle, refs: list[ModelHandle], s: PassSettings, context: int) -> dict:
    key = {"kind": "causal-pair", "target": t.fingerprint, "references": [r.fingerprint for r in refs],
           "load": [t.numerics, *(r.numerics for r in refs)],
           "tokenizer": t.tokenizer_fingerprint, "temperature": s.temperature, "reductions": list(s.pair_reductions),
           "context": context, **s.key()}
    if s.pair_settings:
        key["pair_settings"] = dict(sorted(s.pair_settings.items()))
    return key


def _to_record(st: TokenStats) -> Record:
    return {k: getattr(st, k) for k in TOKEN_FIELDS}


def _from_record(rec: Record) -> TokenStats:
    return TokenStats(**{k: rec[k] for k in TOKEN_FIELDS})


def _run_pass(models: list[ModelHandle], texts: list[str], hashes: list[str], spaces: list[CacheNamespace],
              pair_space: CacheNamespace | None, settings: PassSettings, timings: dict[str, float] | None = None,
              desc: str = "scoring") -> int:
    """Score the texts missing from any of ``spaces``/``pair_space`` and cache the results.

    In a data-parallel run the main process decides what is missing (it reads the cache; the
    others never do) and every process scores every WORLD_SIZE-th of those texts; at the end all
    wait for each other, so the main process can read what the others wrote."""
    from memlens.models.causal import CausalScorer, TokenFeed

    timings = {} if timings is None else timings
    state = distributed_state()
    t0 = time.perf_counter()
    plan: tuple[list[int], str | None] = ([], None)
    if state is None or state.is_main_process:
        needed = [i for i, h in enumerate(hashes)
                  if any(h not in ns.get([h]) for ns in spaces) or (pair_space is not None and not pair_space.get([h]))]
        needed = sorted(set(needed), key=lambda i: hashes[i])
        unique: dict[str, int] = {}
        for i in needed:
            unique.setdefault(hashes[i], i)
        miss = None
        if unique and settings.cache_only:
            dtype = (models[0].numerics or {}).get("dtype")
            miss = (f"{len(unique)} texts have no cached statistics for {models[0].name} with these settings (dtype {dtype}); "
                    "run `memlens audit` or `memlens score` first (same models, --max-length, --stride, --temperature), "
                    "or pass the audit's --dtype: after an audit on a GPU, where auto means bfloat16, pass --dtype bfloat16")
        plan = (list(unique.values()), miss)
    todo, miss = broadcast_from_main(plan)  # every process raises the same error, none waits for the others
    if miss:
        raise CacheMissError(miss)
    if state is not None:  # data parallel over texts: every WORLD_SIZE-th text is this process's
        todo = todo[state.process_index::state.num_processes]
    _add(timings, "cache check", time.perf_counter() - t0)
    if todo:
        # Tokenize in the background (a worker process for many texts, else a thread: TokenFeed), chunk by chunk,
        # longest texts first: the first chunks are ready while the weights load and the rest while the pass
        # runs. Under data parallelism each process tokenizes its own share only (``todo`` is already that).
        todo_texts = [texts[i] for i in todo]
        longest_first = sorted(range(len(todo)), key=lambda j: -len(todo_texts[j]))
        with TokenFeed(models[0].tokenizer, todo_texts, longest_first, chunk=settings.tokenize_chunk,
                       process=settings.tokenize_process) as feed:
            t1 = time.perf_counter()
            loaded = [m.model for m in models]
            _add(timings, "load models", time.perf_counter() - t1)
            t1 = time.perf_counter()
            scorer = CausalScorer(loaded, models[0].tokenizer, batch_size=settings.batch_size,
                                  max_length=settings.max_length, stride=settings.stride, temperature=settings.temperature,
                                  vocab_chunk_rows=settings.vocab_chunk_rows, progress=settings.progress,
                                  pair_reduction_names=settings.pair_reductions, pair_settings=settings.pair_settings)
            scorer.desc = desc
            all_spaces = spaces + ([pair_space] if pair_space is not None else [])
            flusher = Flusher(all_spaces, settings.flush_every)

            def on_done(done: dict[int, dict]) -> None:
                per_space: list[dict[str, Record]] = [dict() for _ in all_spaces]
                for j, res in done.items():
                    h = hashes[todo[j]]
                    for k, st in enumerate(res["stats"]):
                        per_space[k][h] = _to_record(st)
                    if pair_space is not None:
                        per_space[-1][h] = dict(res["pair"])
                flusher.add(per_space)

            try:
                scorer.score(todo_texts, on_batch_done=on_done, feed=feed, keep=False)
            finally:
                flusher.close()  # whatever finished is kept, also when the run is interrupted
            _add(timings, "pass", time.perf_counter() - t1)
        # the tokenizer's own time (the worker process's, or the thread's), which overlaps the load and the pass (not
        # to be added to them), and the time the pass waited for a chunk not tokenized yet (the only part of
        # tokenizing that costs wall time)
        _add(timings, "tokenize (background, overlaps load and pass)", feed.timings["tokenize (background)"])
        _add(timings, "pass: waited for tokens", feed.timings["wait for tokens"])
    if state is not None:
        t1 = time.perf_counter()
        state.wait_for_everyone()
        _add(timings, "wait for other processes", time.perf_counter() - t1)
    return len(todo)


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + seconds


def align_by_spans(src_start: np.ndarray, src_end: np.ndarray, src_values: np.ndarray,
                   dst_start: np.ndarray, dst_end: np.ndarray) -> np.ndarray:
    """Move additive per-token values from one tokenization to another by character overlap.

    A source token's value is shared among the destination tokens it overlaps, in proportion to
    the characters they share, so sums over any run of whole tokens are preserved.
    """
    out = np.zeros(len(dst_start), dtype=np.float64)
    n_dst = len(dst_start)
    if n_dst == 0:
        return out
    # Byte-level BPE gives the tokens of one multi-byte character the same span: split such a span
    # evenly among them, so each token owns a distinct (fractional) stretch of characters.
    src_start, src_end = _split_shared_spans(src_start, src_end)
    dst_start, dst_end = _split_shared_spans(dst_start, dst_end)
    j0 = 0
    for i in range(len(src_start)):
        a, b = src_start[i], src_end[i]
        while j0 < n_dst and dst_end[j0] <= a:
            j0 += 1
        # Share by overlap normalised by the total overlap (not the source width), so that
        # characters no destination token covers (e.g. trimmed whitespace) lose no value.
        hits, j = [], j0
        while j < n_dst and dst_start[j] < b:
            ov = min(b, dst_end[j]) - max(a, dst_start[j])
            if ov > 0:
                hits.append((j, ov))
            j += 1
        if hits:
            total = sum(ov for _, ov in hits)
            for j, ov in hits:
                out[j] += src_values[i] * ov / total
        else:  # zero-width token (e.g. a special token) or uncovered characters: the next token takes it
            out[min(j0, n_dst - 1)] += src_values[i]
    return out


def _split_shared_spans(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spans as floats, where a run of k consecutive tokens with one span (s, e) becomes k equal parts."""
    start = np.asarray(start, dtype=np.float64).copy()
    end = np.asarray(end, dtype=np.float64).copy()
    i, n = 0, len(start)
    while i < n:
        j = i
        while j + 1 < n and start[j + 1] == start[i] and end[j + 1] == end[i]:
            j += 1
        k = j - i + 1
        if k > 1 and end[i] > start[i]:
            s0, w = start[i], (end[i] - start[i]) / k
            for r in range(k):
                start[i + r], end[i + r] = s0 + r * w, s0 + (r + 1) * w
        i = j + 1
    return start, end


def compute_stats(target: ModelHandle, references: Sequence[ModelHandle], texts: Sequence[str], cache: StatsCache,
                  settings: PassSettings, label: str = "texts") -> StatsBundle:
    """Per-token statistics of ``texts`` under the target and every reference, cached.
    ``label`` names the texts in the progress bar ("scoring population (target+reference)").

    In a data-parallel run only the main process gets the statistics; the others score their share
    and get an empty bundle (no statistics, only ``computed`` and ``timings``)."""
    texts = list(texts)
    timings: dict[str, float] = {}
    hashes = [text_hash(t) for t in texts]
    paired = [r for r in references if r.tokenizer_fingerprint == target.tokenizer_fingerprint]
    other = [r for r in references if r.tokenizer_fingerprint != target.tokenizer_fingerprint]
    notes = []
    ctx = {id(h): min(m.context_length() for m in [target, *paired]) for h in [target, *paired]}
    ctx.update({id(r): r.context_length() for r in other})
    target_ns = cache.namespace(_single_key(target, settings, ctx[id(target)]))
    computed = 0
    if paired:
        pair_ns = cache.namespace(_pair_key(target, paired, settings, ctx[id(target)]))
        ref_spaces = [cache.namespace(_single_key(r, settings, ctx[id(r)])) for r in paired]
        who = "target+reference" if len(paired) == 1 else f"target+{len(paired)} references"
        computed += _run_pass([target, *paired], texts, hashes, [target_ns, *ref_spaces], pair_ns, settings, timings,
                              f"scoring {label} ({who})")
    else:
        pair_ns = None
        computed += _run_pass([target], texts, hashes, [target_ns], None, settings, timings, f"scoring {label} (target)")
    for r in other:
        notes.append(f"reference {r.name} has another tokenizer than the target: token-level scores use its log-probabilities "
                     "aligned by character spans, without the D_KL term")
        computed += _run_pass([r], texts, hashes, [cache.namespace(_single_key(r, settings, ctx[id(r)]))], None, settings, timings,
                              f"scoring {label} (reference {r.name})")
    if not is_main_process():
        return StatsBundle([], [], None, computed, notes, timings=timings)

    t0 = time.perf_counter()
    if distributed_state() is not None:  # what the other processes wrote
        for ns in [target_ns, *(cache.namespace(_single_key(r, settings, ctx[id(r)])) for r in references),
                   *([pair_ns] if pair_ns is not None else [])]:
            ns.refresh()
    tstats = [_from_record(target_ns.get([h])[h]) for h in hashes]
    views = []
    for r in references:
        ns = cache.namespace(_single_key(r, settings, ctx[id(r)]))
        views.append(ReferenceView(r.name, [_from_record(ns.get([h])[h]) for h in hashes]))
    comparison = None
    recs = None
    if pair_ns is not None:
        recs = [pair_ns.get([h])[h] for h in hashes]
        note = "" if not other else "token-level comparison uses the references sharing the target's tokenizer only"
        comparison = TokenComparison([r["log_ratio"] for r in recs], [r["kl_ref_target"] for r in recs], note)
    elif other:
        log_ratio = []
        for i, ts in enumerate(tstats):
            ref_lp = np.mean([align_by_spans(v.stats[i].span_start, v.stats[i].span_end, v.stats[i].logprob,
                                             ts.span_start, ts.span_end)
                              for v in views], axis=0)
            log_ratio.append(ts.logprob - ref_lp)
        comparison = TokenComparison(log_ratio, None, notes[0])
    timings["cache read"] = time.perf_counter() - t0
    return StatsBundle(tstats, views, comparison, computed, notes, pair_records=recs, timings=timings)


def out_reference_comparison(target: ModelHandle, references: Sequence[ModelHandle], texts: Sequence[str], membership: np.ndarray,
                             cache: StatsCache, settings: PassSettings) -> TokenComparison | None:
    """The token comparison with q, per text, the mixture of the references that are OUT for it.

    With reference models trained on known splits, a text is IN for about half of them; mixing all
    of them into q (what :func:`compute_stats` does) puts the member's own memorization into the
    reference and cancels the very signal token-level InfoRMIA measures. Texts are grouped by their
    set of OUT references and each group gets a paired pass with exactly those references. That is
    the same q_i as a per-row weight vector over all references would give (the mixture
    logsumexp_r(log q_r + log w_ri) - log sum_r w_ri with w_ri = OUT), needs no change to the scorer,
    and each group's cache key names its references, so the splits need not enter any key (with K
    balanced references there are C(K, K/2) groups: 6 for K = 4). ``membership``: bool [R, n] in the
    order of ``references``; a text with no OUT reference uses all of them. None when no reference
    shares the target's tokenizer (there is no D_KL term to fix then).
    """
    from memlens.splits import out_groups

    texts = list(texts)
    keep = [j for j, r in enumerate(references) if r.tokenizer_fingerprint == target.tokenizer_fingerprint]
    if not keep or not texts:
        return None
    groups = out_groups(np.asarray(membership, dtype=bool)[keep])
    # only the InfoRMIA reduction: the other paired reductions (LT-MIA) keep their all-reference pass
    s = PassSettings(**{**settings.__dict__, "pair_reductions": ("informia",), "pair_settings": {}})
    log_ratio: list = [None] * len(texts)
    kl: list = [None] * len(texts)
    for out, idx in sorted(groups.items()):
        bundle = compute_stats(target, [references[keep[j]] for j in out], [texts[i] for i in idx], cache, s)
        if bundle.comparison is None:  # a data-parallel worker: it scored its share, the main process assembles
            continue
        for k, i in enumerate(idx):
            log_ratio[i], kl[i] = bundle.comparison.log_ratio[k], bundle.comparison.kl[k]
    if not is_main_process():
        return None
    return TokenComparison(log_ratio, kl, "token-level q per text: the mixture of the references OUT for it (reference splits)")
