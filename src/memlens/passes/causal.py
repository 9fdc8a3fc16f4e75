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
from memlens.token_file import ReadOnDemand

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
    # texts whose statistics the attacks hold at once: an audit of more texts runs its attacks a chunk at a time
    # (memlens.audit; about 150 MB of statistics at 276 tokens a text with one reference)
    attack_chunk: int = 4096
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
        # which texts lack a record in any namespace: from the namespaces' indexes, no shard read whole
        absent: set[str] = set()
        for ns in [*spaces, *([pair_space] if pair_space is not None else [])]:
            absent.update(ns.missing(dict.fromkeys(hashes)))
        needed = sorted((i for i, h in enumerate(hashes) if h in absent), key=lambda i: hashes[i])
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


@dataclass
class StatsSource:
    """Where the statistics of a list of texts are: the cache namespaces of the target, each reference
    and the pair, read a chunk of texts at a time (:meth:`chunks`, :meth:`bundle`) so that the attacks
    never need every text's statistics in memory at once. :func:`stats_source` makes one."""

    hashes: list[str]
    target: CacheNamespace
    references: list[tuple[str, CacheNamespace]]  # (name, namespace) in the order of the references
    pair: CacheNamespace | None  # the paired pass's records (the references sharing the target's tokenizer)
    other_tokenizer: bool  # some reference has another tokenizer (its log-probabilities are aligned by spans)
    computed: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hashes)

    def chunks(self, max_texts: int) -> list[np.ndarray]:
        """The texts' positions in chunks of about ``max_texts`` (whole cache shards together, so that each
        shard is read once; a shard larger than that is split), each chunk in ascending order and the
        chunks in the order of their first position."""
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        where = self.target.shards(dict.fromkeys(self.hashes))
        groups: dict[str | None, list[int]] = {}
        for i, h in enumerate(self.hashes):
            groups.setdefault(where[h], []).append(i)
        out: list[np.ndarray] = []
        cur: list[int] = []
        for group in sorted(groups.values(), key=lambda g: g[0]):
            for lo in range(0, len(group), max_texts):
                part = group[lo:lo + max_texts]
                if cur and len(cur) + len(part) > max_texts:
                    out.append(np.sort(np.asarray(cur, dtype=np.int64)))
                    cur = []
                cur.extend(part)
        if cur:
            out.append(np.sort(np.asarray(cur, dtype=np.int64)))
        return out

    def target_stats(self, positions: Sequence[int] | None = None) -> list[TokenStats]:
        """The target's statistics of the texts at ``positions`` (every text when None), in that order."""
        hashes = self.hashes if positions is None else [self.hashes[i] for i in positions]
        recs = _read(self.target, list(dict.fromkeys(hashes)))
        return [_from_record(recs[h]) for h in hashes]

    def target_view(self) -> SourceStats:
        """Every text's target statistics as a list-like that reads them when asked for (:class:`SourceStats`)."""
        return SourceStats(self)

    def bundle(self, positions: Sequence[int] | None = None) -> StatsBundle:
        """The statistics of the texts at ``positions`` (every text when None), in that order."""
        hashes = self.hashes if positions is None else [self.hashes[i] for i in positions]
        unique = list(dict.fromkeys(hashes))
        trec = _read(self.target, unique)
        tstats = [_from_record(trec[h]) for h in hashes]
        del trec
        views = []
        for name, ns in self.references:
            recs = _read(ns, unique)
            views.append(ReferenceView(name, [_from_record(recs[h]) for h in hashes]))
        comparison = None
        pair = None
        if self.pair is not None:
            precs = _read(self.pair, unique)
            pair = [precs[h] for h in hashes]
            note = "" if not self.other_tokenizer else "token-level comparison uses the references sharing the target's tokenizer only"
            comparison = TokenComparison([r["log_ratio"] for r in pair], [r["kl_ref_target"] for r in pair], note)
        elif self.other_tokenizer:
            log_ratio = []
            for i, ts in enumerate(tstats):
                ref_lp = np.mean([align_by_spans(v.stats[i].span_start, v.stats[i].span_end, v.stats[i].logprob,
                                                 ts.span_start, ts.span_end)
                                  for v in views], axis=0)
                log_ratio.append(ts.logprob - ref_lp)
            comparison = TokenComparison(log_ratio, None, self.notes[0])
        return StatsBundle(tstats, views, comparison, self.computed, list(self.notes), pair_records=pair, timings=self.timings)


def _read(ns: CacheNamespace, hashes: list[str]) -> dict[str, Record]:
    """The records of these texts, or a one-line error when some could not be read back (their shard was
    removed or set aside after the pass: a rerun recomputes them)."""
    recs = ns.get(hashes)
    if len(recs) < len(hashes):
        raise CacheMissError(f"the cached statistics of {len(hashes) - len(recs)} texts could not be read back (a cache shard "
                             "was removed or set aside as corrupt meanwhile, see the warnings above); run again to recompute them")
    return recs


class SourceStats(ReadOnDemand):
    """The target's :class:`TokenStats` of a :class:`StatsSource`'s texts as a list-like read from the cache when
    asked for: one text reads its shard; iterating reads every text's at once."""

    def __init__(self, source: StatsSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def _one(self, i: int) -> TokenStats:
        return self.source.target_stats([i])[0]

    def _all(self) -> list[TokenStats]:
        return self.source.target_stats()


def stats_source(target: ModelHandle, references: Sequence[ModelHandle], texts: Sequence[str], cache: StatsCache,
                 settings: PassSettings, label: str = "texts") -> StatsSource:
    """Run the pass for the texts missing from the cache (target and every reference) and say where every
    text's statistics are; nothing is read back yet (:meth:`StatsSource.bundle` reads).
    ``label`` names the texts in the progress bar ("scoring population (target+reference)").

    In a data-parallel run every process scores its share; the main process then indexes what the
    others wrote."""
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
    ref_spaces = [(r.name, cache.namespace(_single_key(r, settings, ctx[id(r)]))) for r in references]
    if is_main_process() and distributed_state() is not None:  # index what the other processes wrote
        t0 = time.perf_counter()
        for ns in [target_ns, *(ns for _, ns in ref_spaces), *([pair_ns] if pair_ns is not None else [])]:
            ns.refresh()
        timings["cache index"] = time.perf_counter() - t0
    return StatsSource(hashes, target_ns, ref_spaces, pair_ns, bool(other), computed, notes, timings)


def compute_stats(target: ModelHandle, references: Sequence[ModelHandle], texts: Sequence[str], cache: StatsCache,
                  settings: PassSettings, label: str = "texts") -> StatsBundle:
    """Per-token statistics of ``texts`` under the target and every reference, cached (every text's in
    memory: :func:`stats_source` reads a chunk at a time).
    ``label`` names the texts in the progress bar ("scoring population (target+reference)").

    In a data-parallel run only the main process gets the statistics; the others score their share
    and get an empty bundle (no statistics, only ``computed`` and ``timings``)."""
    source = stats_source(target, references, texts, cache, settings, label)
    if not is_main_process():
        return StatsBundle([], [], None, source.computed, source.notes, timings=source.timings)
    t0 = time.perf_counter()
    bundle = source.bundle()
    bundle.timings["cache read"] = time.perf_counter() - t0
    return bundle


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
