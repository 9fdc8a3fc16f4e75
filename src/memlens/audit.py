"""``memlens.audit``: texts and models in, scores, metrics and token-level leakage out."""
from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import logging
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from memlens._io import write_jsonl
from memlens._version import __version__
from memlens.attacks import AttackInput, AttackResult, get_attack, resolve_attack_names
from memlens.cache import SPILL_DIR, StatsCache, default_cache_dir
from memlens.data import (
    DataError,
    Sample,
    as_samples,
    check_labels,
    check_text,
    check_unique_ids,
    gather_audit_samples,
    spreadsheet_escape,
)
from memlens.metrics import DEFAULT_FPRS, AttackMetrics, evaluate_many
from memlens.models.adapters import adapter_handles, is_adapter_dir, load_adapter
from memlens.models.handle import LoadOptions, ModelHandle
from memlens.passes._shared import is_main_process
from memlens.passes.causal import PassSettings, StatsBundle, StatsSource, compute_stats, stats_source
from memlens.scope import Scope, check_assistant_turns, is_chat, render_chats, resolve_scope, restrict, sample_spans, scatter
from memlens.stats import TokenStats
from memlens.token_file import TOKEN_ROW_GROUP, StoredColumn, TokenFileWriter, TokenStore
from memlens.tokens import TokenStrings, token_spread

log = logging.getLogger("memlens")



@dataclass
class AuditResult:
    samples: list[Sample]
    scores: pd.DataFrame  # one row per text: id, label, [tier], then one column per attack
    metrics: dict[str, AttackMetrics]
    token_scores: dict[str, list[np.ndarray]]  # attack -> per text per-token scores
    target_stats: list[TokenStats]  # per text; spans and token ids for the token-level view
    token_strings: Sequence[list[str]]  # a list, or memlens.tokens.TokenStrings (made when asked for)
    settings: dict[str, Any]
    attack_info: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference_logprobs: list[np.ndarray] | None = None  # aligned to target tokens, for the token view
    extra: dict[str, Any] = field(default_factory=dict)  # further studies (e.g. the demo's), saved in results.json
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (results.json "timings")
    # An audit whose attacks ran over chunks of texts keeps its token-level results on disk, in this
    # token_scores.parquet (memlens.token_file.TokenStore): token_scores, target_stats, token_strings and
    # reference_logprobs are then list-likes that read from it (token scores as saved, float32) and from the
    # cache when asked for: one text reads its row group, iterating reads a whole column. save() puts the
    # file itself in the output directory. None: everything is in memory.
    token_store: TokenStore | None = None

    def results_dict(self) -> dict[str, Any]:
        return {
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "peak_rss_mb": peak_rss_mb(),
            "memlens_version": __version__,
            "settings": self.settings,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "attack_info": self.attack_info,
            "notes": self.notes,
            "n_texts": len(self.samples),
            **self.extra,
        }

    def save(self, out_dir: str | os.PathLike, report: bool = True, *, redact: bool = False, redact_threshold: float | None = None,
             redact_field: str = "pii", extra: Mapping[str, Callable[[Path], Any]] | None = None,
             info: Mapping[str, Any] | None = None) -> Path:
        """Write scores.csv, texts.jsonl, token_scores.parquet, roc.png (if there are metrics), unless
        ``report=False`` report.html (as ``memlens audit`` does), and results.json, as one set with a
        manifest.json (memlens.outputs): a failure part-way leaves the directory's earlier outputs as they
        were. ``extra``: further files of the set by name (e.g. the CLI's report.html with its own
        settings), each a function that writes the path it is given; ``info``: put in the manifest.

        ``redact``: write a redacted copy instead (:func:`memlens.redact.redact_result`: the texts'
        ``redact_field`` spans, and with ``redact_threshold`` every token scored above it, become
        typed placeholders; scores unchanged), report included."""
        if redact or redact_threshold is not None:
            from memlens.redact import redact_result

            return redact_result(self, field=redact_field, threshold=redact_threshold).save(out_dir, report=report, extra=extra, info=info)
        from memlens.outputs import write_set

        def timed(name: str, write: Callable[[Path], Any]) -> Callable[[Path], Any]:
            def run(path: Path) -> Any:
                with self.stage(name):
                    return write(path)
            return run

        writers: dict[str, Callable[[Path], Any]] = {
            "scores.csv": timed("save: scores.csv", self._save_scores),
            # the report and `memlens show` read these back
            "texts.jsonl": timed("save: texts.jsonl", self._save_texts),
            "token_scores.parquet": timed("save: token_scores.parquet", self._save_tokens),
        }
        if self.metrics:
            writers["roc.png"] = timed("save: roc.png", self._save_roc)
        if report and "report.html" not in (extra or {}):
            if _REPORT_WRITER is None:
                # memlens.report sits above this module (it reads AuditResult), so it registers its writer
                # here when imported (register_report_writer) instead of being imported by name
                importlib.import_module("memlens.report")
            if _REPORT_WRITER is not None:
                writers["report.html"] = timed("report", lambda p: _REPORT_WRITER(self, p.parent))
        writers.update(extra or {})
        t0 = time.perf_counter()

        def results_json(path: Path) -> None:
            self.timings["save: every file but results.json (concurrently, wall)"] = time.perf_counter() - t0
            self._write_results_file(path)

        writers["results.json"] = results_json  # last, so its timings include the other writes (the report's too)
        # The files are independent: written on threads at once (the stage timings above are each file's own
        # wall time, overlapping). roc.png and the report share one thread: both draw with matplotlib.
        return write_set(out_dir, writers, info, concurrent=[["token_scores.parquet"], ["scores.csv", "texts.jsonl"],
                                                             ["report.html", "roc.png"]])

    def write_results_json(self, out_dir: str | os.PathLike) -> None:
        self._write_results_file(Path(out_dir) / "results.json")

    def _write_results_file(self, path: Path) -> None:
        path.write_text(json.dumps(self.results_dict(), indent=2, default=json_default))

    @contextmanager
    def stage(self, name: str):
        """Add the wall time of the ``with`` block to ``timings[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def _save_scores(self, path: Path) -> None:
        # ids and tiers are the user's strings: a leading quote keeps a spreadsheet from running them as
        # formulas, and quoting every string keeps a carriage return in one from splitting its row.
        safe = self.scores.apply(lambda c: c if pd.api.types.is_numeric_dtype(c) else c.map(spreadsheet_escape))
        safe.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)

    def _save_texts(self, path: Path) -> None:
        write_jsonl(path, ({"id": smp.id, "text": smp.text, "label": smp.label, "meta": smp.meta} for smp in self.samples),
                    default=json_default)

    def _save_roc(self, path: Path) -> None:
        from memlens.plots import plot_roc

        labels = self.scores["label"].to_numpy()
        plot_roc({a: (labels, self.scores[a].to_numpy()) for a in self.metrics}, path, aucs={a: m.auc for a, m in self.metrics.items()})

    def _save_tokens(self, path: Path, rows_per_group: int = TOKEN_ROW_GROUP) -> None:
        """token_scores.parquet, written one row group of ``rows_per_group`` texts at a time: the
        columns of one group are built from the per-text arrays (one values buffer and one offsets
        array each, no Python list per token) and written before the next, so the file never
        exists twice in memory; small groups also let ``memlens show`` read one text's group only.
        An audit whose attacks ran in chunks wrote this file already (``token_store``): it is linked or copied."""
        if self.token_store is not None:
            self.token_store.save_as(path)
            return
        n = len(self.samples)
        with TokenFileWriter(path, list(self.token_scores), self.reference_logprobs is not None) as writer:
            for lo in range(0, max(n, 1), rows_per_group):
                idx = range(lo, min(lo + rows_per_group, n))
                strings = (self.token_strings.arrow(idx) if isinstance(self.token_strings, TokenStrings)
                           else [self.token_strings[i] for i in idx])
                writer.write([self.samples[i].id for i in idx], [self.samples[i].label for i in idx],
                             token_columns([self.target_stats[i] for i in idx], strings,
                                           None if self.reference_logprobs is None else [self.reference_logprobs[i] for i in idx],
                                           {a: [t[i] for i in idx] for a, t in self.token_scores.items()}))


def token_columns(stats: Sequence[TokenStats], strings, reference_logprobs, token_scores: Mapping[str, Sequence]) -> dict[str, Any]:
    """The list columns of token_scores.parquet (memlens.token_file.token_schema) for a group of texts."""
    cols: dict[str, Any] = {"token_ids": [st.token_ids for st in stats], "tokens": strings,
                            "span_start": [st.span_start for st in stats], "span_end": [st.span_end for st in stats],
                            "target_logprob": [st.logprob for st in stats]}
    if reference_logprobs is not None:
        cols["reference_logprob"] = reference_logprobs
    cols.update({f"{a}_token": toks for a, toks in token_scores.items()})
    return cols


def reference_logprobs_of(stats: Sequence[TokenStats], comparison) -> list[np.ndarray] | None:
    """The reference's log-probability of each target token (target log p minus the log-ratio), float32 as saved
    and shown (a float64 copy of every token would double the list's memory); None without a comparison."""
    if comparison is None:
        return None
    return [np.subtract(st.logprob, lr, dtype=np.float64).astype(np.float32) for st, lr in zip(stats, comparison.log_ratio)]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


_REPORT_WRITER: Callable[[AuditResult, Path], Any] | None = None


def register_report_writer(writer: Callable[[AuditResult, Path], Any]) -> None:
    """What ``AuditResult.save`` calls to write report.html (memlens.report registers write_report)."""
    global _REPORT_WRITER
    _REPORT_WRITER = writer


def json_default(o: Any):
    """numpy scalars, arrays and tuples as JSON (the ``default`` of json.dumps for saved results)."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


def _handles(target, references, tokenizer, reference_tokenizers, gguf_file, options, base=None) -> tuple[ModelHandle, list[ModelHandle]]:
    refs = []
    if references is None or isinstance(references, (str, os.PathLike, ModelHandle)) or hasattr(references, "forward"):
        references = [] if references is None else [references]
    references = list(references)
    t, refs = _adapter_target(target, references, base, options)
    if t is None:
        t = target if isinstance(target, ModelHandle) else ModelHandle(target, tokenizer, gguf_file=gguf_file, options=options)
    references = [r for r in references if not _is_auto(r)]
    rtoks = list(reference_tokenizers or [])
    if len(rtoks) > len(references):
        raise ValueError(f"{len(rtoks)} reference tokenizers given for {len(references)} reference models")
    rtoks += [None] * (len(references) - len(rtoks))  # zip() would silently drop the references without one
    for r, rt in zip(references, rtoks):
        rtok = rt if rt is not None else (tokenizer if hasattr(r, "forward") else None)
        if is_adapter_dir(r):  # another fine-tune's adapter as a reference
            model, atok = load_adapter(r, device=options.device, dtype=options.dtype, trust_remote_code=options.trust_remote_code,
                                       allow_pickle=options.allow_pickle)
            refs.append(ModelHandle(model, rt or atok, name=str(r), options=options))
            continue
        refs.append(r if isinstance(r, ModelHandle) else ModelHandle(r, rtok, options=options))
    return t, refs


def _is_auto(r) -> bool:
    return isinstance(r, str) and r == "auto"


def _adapter_target(target, references, base, options) -> tuple[ModelHandle | None, list[ModelHandle]]:
    """A PEFT adapter directory as the target: its base with the adapter, and for the reference
    ``"auto"`` the same model with the adapter disabled (one copy of the base in memory)."""
    auto = any(_is_auto(r) for r in references)
    if not is_adapter_dir(target):
        if auto:
            raise DataError(f"--reference auto needs a PEFT adapter directory as --target (the reference is its base with the "
                            f"adapter disabled); {target if isinstance(target, (str, os.PathLike)) else type(target).__name__} "
                            "is not one")
        if base is not None:
            raise DataError("--base is the base model of a PEFT adapter; the target is not an adapter directory")
        return None, []
    return adapter_handles(target, "auto" if auto else None, base=base, options=options)


def score_texts(target, references=(), texts: Sequence[str | Sample] = (), *, tokenizer=None, reference_tokenizers=None,
                gguf_file: str | None = None, cache_dir: str | os.PathLike | None = "default", settings: PassSettings | None = None,
                options: LoadOptions | None = None, base: str | os.PathLike | None = None) -> StatsBundle:
    """Only the statistics pass (``memlens score``): cached TokenStats for texts (strings, or Samples:
    chat records are rendered with the target's chat template first). ``base``: the base model of a
    PEFT adapter directory given as ``target``."""
    t, refs = _handles(target, references, tokenizer, reference_tokenizers, gguf_file, options or LoadOptions(), base)
    samples = [x for x in texts if isinstance(x, Sample)]
    render_chats(samples, t.tokenizer)
    texts = [x.text if isinstance(x, Sample) else x for x in texts]
    for n, text in enumerate(texts):
        check_text(text, f"text {n}")
    cache = StatsCache(default_cache_dir() if cache_dir == "default" else cache_dir)
    return compute_stats(t, refs, texts, cache, settings or PassSettings())


def run_attacks(inp: AttackInput, attacks: Sequence[str], attack_params: dict[str, dict] | None = None, *,
                chunk: bool = False) -> dict[str, AttackResult]:
    """Each attack on ``inp``; ``chunk``: ``inp`` is one chunk of the texts, the infos are joined later
    (:meth:`AttackSpec.run_chunk`, :meth:`AttackSpec.finish_info`)."""
    out = {}
    for name in attacks:
        spec = get_attack(name)
        run = spec.run_chunk if chunk else spec
        out[name] = run(inp, **(attack_params or {}).get(name, {}))
    return out


@dataclass
class EvalSettings:
    """How scores become metrics: the FPRs of the TPR@FPR columns, bootstrap resamples for the
    intervals, and the seed (which also seeds torch, numpy and the masked pass's masks)."""

    fprs: Sequence[float] = DEFAULT_FPRS
    n_bootstrap: int = 1000
    seed: int = 0


def _grouped(cls, given, name: str, **keywords: Any):
    """``given`` (a settings object, copied) or one built from the keywords. A keyword that differs
    from its default next to an object would be silently ignored: that is an error instead."""
    if given is None:
        return cls(**keywords)
    if not isinstance(given, cls):
        raise DataError(f"{name} must be a {cls.__name__}, got {type(given).__name__}")
    defaults = cls()
    clash = sorted(k for k, v in keywords.items() if v != getattr(defaults, k))
    if clash:
        raise DataError(f"{', '.join(clash)}: give {'it' if len(clash) == 1 else 'them'} in {name}={cls.__name__}(...) "
                        "or as keywords, not both")
    return dataclasses.replace(given)


def audit(
    target,
    references=None,
    members=None,
    nonmembers=None,
    data=None,
    population=None,
    attacks: Sequence[str] | str = "all",
    attack_params: dict[str, dict] | None = None,
    *,
    tokenizer=None,
    reference_tokenizers=None,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    temperature: float = 1.0,
    cache_dir: str | os.PathLike | None = "default",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device_map: str | None = None,
    text_field: str = "text",
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = True,
    require_labels: bool = True,
    cache_only: bool = False,
    attack_chunk: int = 4096,
    model_kind: str = "causal",
    masked: dict[str, Any] | None = None,
    load: LoadOptions | None = None,
    pass_settings: PassSettings | None = None,
    evaluation: EvalSettings | None = None,
    base: str | os.PathLike | None = None,
    score: str = "auto",
    canaries=None,
    canary_options: dict[str, Any] | None = None,
    blind: bool | dict[str, Any] = True,
    reference_splits=None,
) -> AuditResult | None:
    """Run the membership audit.

    ``target``/``references``: hub ids, local directories, ``.gguf`` files, or in-memory models
    (then pass ``tokenizer``). ``members``/``nonmembers``/``data``/``population``: paths or lists
    of strings/dicts. ``cache_dir``: "default" (``~/.cache/memlens``), a path, or None (no disk cache).
    ``model_kind``: "causal" (autoregressive LMs) or "masked" (masked / diffusion LMs, for SAMA);
    ``masked``: options of the masked pass (steps, alpha_min, alpha_max, nested, mask_token_id,
    auto_class, shift_logits), see :func:`memlens.passes.masked.score_masked`.

    The settings can also come grouped: ``load=LoadOptions(device, dtype, trust_remote_code,
    allow_pickle, device_map, revision)``, ``pass_settings=PassSettings(batch_size, max_length, stride,
    temperature, progress, cache_only, ...)``, ``evaluation=EvalSettings(fprs, n_bootstrap, seed)``;
    the single keywords of the same names keep working (giving both is an error). ``attack_chunk``: above this
    many audited texts the attacks run a chunk of that many at a time (memory bounded by the chunk, not the
    texts; every output the same).

    Fine-tunes: ``target`` may be a PEFT adapter directory (its base from the adapter config, or
    ``base``), and ``references="auto"`` is then the same model with the adapter disabled.
    ``score``: which tokens the attacks aggregate over, "completion" (prompt/completion records),
    "assistant" (chat records, ``messages``), "all", or "auto" (what the record shape implies); an
    attack's ``span`` parameter (``attack_params={"minkpp": {"span": "pii"}}``) overrides it with
    any spans the records carry. The model pass always scores whole texts (same cache entries).
    ``canaries``: a canary manifest (``memlens canary make``): their exposure under the target goes
    into ``result.extra["canary_exposure"]``; ``canary_options``: keywords of
    :func:`memlens.canary.exposure` (method, n_samples, max_enumerate, batch_size).
    ``blind`` (default on): with labelled members and non-members, also run the model-free blind
    baseline (:mod:`memlens.blind`; a dict gives its options, e.g. ``{"folds": 5, "threshold": 0.6}``):
    results.json gets ``"blind"``, and a warning goes first into ``notes`` when the two sets differ
    without the model (then the attack numbers do not measure memorization).

    Under ``torchrun``/``accelerate launch`` every process scores its share of the texts; only the
    main process returns the result, the others return None once their share is cached.

    ``reference_splits``: which reference trained on which text (a splits file's path, its dict, or a
    :class:`memlens.splits.ReferenceSplits`; see :mod:`memlens.splits`): rmia/informia then run online
    (or offline with the OUT references, tuned a), ``ref`` calibrates each text by its OUT references and
    token-level InfoRMIA mixes, per text, only the references OUT for it.
    """
    import torch

    options = _grouped(LoadOptions, load, "load", device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle, device_map=device_map)
    settings = _grouped(PassSettings, pass_settings, "pass_settings", batch_size=batch_size, max_length=max_length,
                        stride=stride, temperature=temperature, progress=progress, cache_only=cache_only, attack_chunk=attack_chunk)
    ev = _grouped(EvalSettings, evaluation, "evaluation", fprs=fprs, n_bootstrap=n_bootstrap, seed=seed)
    fprs, n_bootstrap, seed = ev.fprs, ev.n_bootstrap, ev.seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    samples = gather_audit_samples(members, nonmembers, data, text_field=text_field)
    if require_labels:
        check_labels(samples)
    dup_notes = check_duplicate_texts(samples)
    pop = as_samples(population, name="population", text_field=text_field)
    check_unique_ids(pop, "population texts")
    from memlens.splits import as_splits

    reference_splits = as_splits(reference_splits)  # a bad file fails before any model runs
    if model_kind not in ("causal", "masked"):
        raise DataError(f"model kind must be causal or masked, got {model_kind!r}")
    if model_kind == "masked":
        if any(is_chat(x.meta) for x in samples) or resolve_scope(samples, score).mode != "all":
            raise DataError("chat records and scoring part of a text (completion, assistant) are for causal LMs; "
                            "give plain or prompt/completion records with --score all for a masked LM")
        result = _with_blind(_audit_masked(target, references, samples, attacks, attack_params, tokenizer, options, masked or {},
                                         cache_dir, settings.max_length, settings.cache_only, settings.progress, seed, fprs,
                                         n_bootstrap), blind, n_bootstrap, seed)
        result.notes.extend(dup_notes)
        return result
    blind_job = _start_blind(samples, blind, seed, cache_dir)
    try:
        return _audit_causal(**locals())
    except BaseException:
        if blind_job is not None:
            blind_job.cancel()
        raise


def _audit_causal(*, target, references, tokenizer, reference_tokenizers, gguf_file, options, base, samples, pop, score, attacks,
                  attack_params, reference_splits, cache_dir, settings, fprs, n_bootstrap, seed, canaries, canary_options, dup_notes,
                  blind, blind_job, **_) -> AuditResult | None:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    t, refs = _handles(target, references, tokenizer, reference_tokenizers, gguf_file, options, base)
    timings["load (handles, tokenizers)"] = time.perf_counter() - t0
    render_chats(samples + pop, t.tokenizer)
    scope = resolve_scope(samples, score)
    check_assistant_turns(samples, scope)
    names = resolve_attack_names(attacks, have_reference=bool(refs), have_population=bool(pop))
    check_attack_selection(names, attack_params)
    attack_params, spans = _span_params(attack_params, names, scope, samples)
    for n in names:  # fail before any model runs
        spec = get_attack(n)
        spec.resolve_params((attack_params or {}).get(n))
        if spec.needs_reference and not refs:
            raise DataError(f"attack {n!r} needs a reference model (--reference)")
        if spec.needs_population and not pop:
            raise DataError(f"attack {n!r} needs population texts (--population)")
    for n in names:  # what the attacks add to the pass (e.g. ltmia's paired reduction, with its classifier's k)
        reductions, pair_settings = get_attack(n).pass_needs((attack_params or {}).get(n))
        settings.pair_reductions = tuple(dict.fromkeys((*settings.pair_reductions, *reductions)))
        settings.pair_settings = {**settings.pair_settings, **pair_settings}  # a copy: never the caller's dict
    memberships = _splits_membership(reference_splits, refs, references, samples, pop)  # before any model runs
    cache = StatsCache(default_cache_dir() if cache_dir == "default" else cache_dir)
    source = stats_source(t, refs, [s.text for s in samples], cache, settings, label="audited texts")
    timings.update({f"texts: {k}": v for k, v in source.timings.items()})
    pop_bundle = compute_stats(t, refs, [s.text for s in pop], cache, settings, label="population") if pop else None
    if pop_bundle is not None:
        timings.update({f"population: {k}": v for k, v in pop_bundle.timings.items()})
    # the grouped OUT-reference passes of token-level InfoRMIA (reference splits) before the workers
    # leave: under torchrun they are data parallel like the main pass
    out_comparisons = _out_comparisons(memberships, t, refs, samples, pop, cache, settings)
    if not is_main_process():
        return None  # a data-parallel worker: its share is in the cache; the main process does the rest
    # Above one chunk of texts the attacks run a chunk at a time (the statistics of one chunk in memory, its
    # token-level results written to disk as they come): every attack must score a text from that text alone,
    # and the cache must be on disk. Reference splits (their per-text OUT comparisons) keep the whole set.
    chunked = (cache.root is not None and len(samples) > settings.attack_chunk and memberships is None
               and all(get_attack(n).runs_per_text((attack_params or {}).get(n)) for n in names))
    if chunked:
        results, missing, store = _attack_in_chunks(source, pop_bundle, samples, pop, names, attack_params, spans,
                                                    cache.root / SPILL_DIR, settings.attack_chunk, timings)
        bundle = None
        splits = None
        pop_comparison = pop_bundle.comparison if pop_bundle is not None else None
    else:
        t0 = time.perf_counter()
        bundle = source.bundle()
        timings["texts: cache read"] = time.perf_counter() - t0
        inp = _attack_input(samples, bundle, pop, pop_bundle)
        splits = _apply_splits(reference_splits, memberships, out_comparisons, inp)
        t0 = time.perf_counter()
        results, missing = _run_scoped(inp, names, attack_params, spans, samples, pop)
        timings["attacks"] = time.perf_counter() - t0
        store = None
        pop_comparison = inp.population_comparison  # the OUT references' with reference splits
    span_notes = [f"{k} audited texts have no {span!r} spans: attacks over {span} give them no score" for span, k in missing.items() if k]
    result = _assemble(samples, t, refs, results, bundle, names, attack_params, settings, fprs, n_bootstrap, seed, len(pop), timings,
                       source=source, store=store)
    result.settings["score"] = {**scope.to_dict(), "spans": {n: spans[n] for n in names if spans.get(n)}}
    for n in names:
        if spans.get(n):
            result.settings["attack_params"][n]["span"] = spans[n]
    result.notes = [scope.describe(), *span_notes, *result.notes]
    if splits is not None:
        result.settings["reference_splits"] = splits.describe()
    result.settings["attack_modes"] = {n: _mode(r.info) for n, r in results.items() if _mode(r.info)}
    result.notes.extend(dup_notes)
    _calibrate_leaks(result, pop_comparison)
    _note_left_out(result, attacks, have_reference=bool(refs), have_population=bool(pop), model_kind="causal")
    if canaries is not None:
        from memlens.canary import target_exposure

        t0 = time.perf_counter()
        result.extra["canary_exposure"] = target_exposure(t.model, canaries, tokenizer=t.tokenizer, seed=seed,
                                                          **(canary_options or {})).to_dict()
        result.extra["canary_exposure"]["settings"]["target"] = t.name  # the adapter dir, not the base the peft model names
        result.timings["canary exposure"] = time.perf_counter() - t0
    return _with_blind(result, blind, n_bootstrap, seed, blind_job)


def _with_blind(result: AuditResult | None, blind: bool | dict[str, Any], n_bootstrap: int, seed: int,
                job: Any = None) -> AuditResult | None:
    """The blind baseline next to the attacks (``audit(blind=...)``), with the audit's bootstrap and seed
    (on the main process only: the others return None). ``job``: its classifier, started by
    :func:`_start_blind` before the pass; the timings then say how long it ran beside the audit and how
    long the audit waited for it."""
    if blind and result is not None:
        from memlens.blind import attach_blind

        stage = "blind baseline" if job is None else "blind baseline: waited for it"
        with result.stage(stage):
            attach_blind(result, job=job, **{"n_bootstrap": n_bootstrap, "seed": seed, **(blind if isinstance(blind, dict) else {})})
        if job is not None and job.seconds is not None:
            name = "blind baseline: read from the cache" if job.cached and job._proc is None else \
                "blind baseline: own process, overlapping the pass (its wall time)"
            result.timings[name] = job.seconds
    return result


def _start_blind(samples, blind: bool | dict[str, Any], seed: int, cache_dir) -> Any:
    """The blind baseline's classifier started now, in a process of its own, on the main process only: it
    needs only the texts and labels, so it runs while the models load and score (memlens.blind.BlindJob)."""
    if not blind or not is_main_process():
        return None
    from memlens.blind import start_blind

    root = default_cache_dir() if cache_dir == "default" else cache_dir
    return start_blind(samples, {"seed": seed, **(blind if isinstance(blind, dict) else {})}, root)


def _span_params(attack_params, names, scope: Scope, samples) -> tuple[dict[str, dict], dict[str, str | None]]:
    """Split each attack's ``span`` parameter from the others: the span name it aggregates over
    (the audit's scope when not given; None = every token), checked against the records."""
    params = {n: dict(v) for n, v in (attack_params or {}).items()}
    spans: dict[str, str | None] = {}
    default = None if scope.mode == "all" else scope.mode
    for n in names:
        name = params.get(n, {}).pop("span", None)
        name = default if name is None else (None if str(name) == "all" else str(name))
        if name is not None and name != default and all(sample_spans(x.meta, name) is None for x in samples):
            raise DataError(f"{n}.span={name}: no audited text has {name!r} spans (a field of {{start, end}} spans, "
                            "or completion/assistant/prompt of prompt/completion and chat records)")
        spans[n] = name
    return params, spans


def _attack_input(samples, bundle: StatsBundle, pop, pop_bundle: StatsBundle | None) -> AttackInput:
    return AttackInput(
        texts=[s.text for s in samples], target=bundle.target, references=bundle.references, comparison=bundle.comparison,
        population_texts=[s.text for s in pop],
        population_target=pop_bundle.target if pop_bundle else [],
        population_references=pop_bundle.references if pop_bundle else [],
        population_comparison=pop_bundle.comparison if pop_bundle else None,
        extras={"pair": bundle.pair_records} if bundle.pair_records is not None else {},
    )


def _run_scoped(inp: AttackInput, names, attack_params, spans: dict[str, str | None], samples,
                pop, chunk: bool = False) -> tuple[dict[str, AttackResult], dict[str, int]]:
    """Each attack on the input cut to its span (built once per span name); token scores are put
    back at their tokens of the whole text, NaN where not scored. Also: per span name, how many texts
    have no such span. ``chunk``: ``inp`` is one chunk of the texts (AttackSpec.run_chunk)."""
    cut: dict[str, Any] = {}
    out: dict[str, AttackResult] = {}
    missing: dict[str, int] = {}
    for n in names:
        span = spans.get(n)
        if span is None:
            out.update(run_attacks(inp, [n], attack_params, chunk=chunk))
            continue
        if span not in cut:
            pop_spans = [sample_spans(x.meta, span) for x in pop]
            cut[span] = restrict(inp, [sample_spans(x.meta, span) for x in samples],
                                 None if pop and all(p is None for p in pop_spans) else pop_spans)
            missing[span] = cut[span].missing
        r = run_attacks(cut[span].inp, [n], attack_params, chunk=chunk)[n]
        if r.token_scores is not None:
            r.token_scores = scatter(r.token_scores, cut[span].masks)
        out[n] = r
    return out, missing


def _attack_in_chunks(source: StatsSource, pop_bundle: StatsBundle | None, samples, pop, names, attack_params,
                      spans: dict[str, str | None], spill_dir: Path, chunk: int,
                      timings: dict[str, float]) -> tuple[dict[str, AttackResult], dict[str, int], TokenStore]:
    """The attacks over chunks of about ``chunk`` texts (whole cache shards, :meth:`StatsSource.chunks`): each
    chunk's statistics are read, attacked with the whole population, and its token-level results written to a
    :class:`TokenStore`, so memory holds a few chunks, not every text. Reading the next chunk and writing the
    last one's rows run on two threads beside the attacks (Parquet decoding and encoding release the GIL): at
    most three chunks are in memory. The results: every text's scores in the texts' order, each attack's
    info joined over the chunks (AttackSpec.finish_info), and token scores read back from the store."""
    n = len(samples)
    scores = {name: np.full(n, np.nan) for name in names}
    infos: dict[str, list[dict]] = {name: [] for name in names}
    units: dict[str, str | None] = {}
    missing: dict[str, int] = {}
    store: TokenStore | None = None
    token_attacks: list[str] = []
    spent = {"read": 0.0, "write": 0.0}

    def read(idx: np.ndarray) -> StatsBundle:
        t0 = time.perf_counter()
        b = source.bundle(idx)
        spent["read"] += time.perf_counter() - t0
        return b

    def write(idx: np.ndarray, part: list, b: StatsBundle, token_scores: dict[str, list]) -> None:
        t0 = time.perf_counter()
        strings = TokenStrings([s.text for s in part], [st.span_start for st in b.target], [st.span_end for st in b.target])
        store.write(idx, [s.id for s in part], [s.label for s in part],
                    token_columns(b.target, strings.arrow(range(len(part))), reference_logprobs_of(b.target, b.comparison),
                                  token_scores))
        spent["write"] += time.perf_counter() - t0

    chunks = source.chunks(chunk)
    t_attack = 0.0
    t_all = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="memlens-chunk-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="memlens-chunk-write") as writer:
        ahead = reader.submit(read, chunks[0])
        written = None
        for k, idx in enumerate(chunks):
            b = ahead.result()
            if k + 1 < len(chunks):
                ahead = reader.submit(read, chunks[k + 1])
            part = [samples[i] for i in idx]
            t1 = time.perf_counter()
            results, miss = _run_scoped(_attack_input(part, b, pop, pop_bundle), names, attack_params, spans, part, pop, chunk=True)
            t_attack += time.perf_counter() - t1
            for span, m in miss.items():
                missing[span] = missing.get(span, 0) + m
            for name, r in results.items():
                scores[name][idx] = r.scores
                infos[name].append(r.info)
                units.setdefault(name, r.token_unit)
            if store is None:
                token_attacks = [name for name in names if results[name].token_scores is not None]
                store = TokenStore(spill_dir, n, token_attacks, b.comparison is not None)
            if written is not None:
                written.result()  # one chunk's rows written at a time, in order (and its error raised here)
            written = writer.submit(write, idx, part, b, {a: results[a].token_scores for a in token_attacks})
            del b, results
        if written is not None:
            written.result()
    assert store is not None  # n > chunk >= 1: there is a chunk
    store.close()
    timings.update({"texts: cache read (chunk by chunk, beside the attacks)": spent["read"], "attacks": t_attack,
                    "attacks: write token rows (beside the attacks)": spent["write"],
                    "attacks, reads and writes of every chunk (wall)": time.perf_counter() - t_all})
    out = {name: AttackResult(scores[name], token_scores=StoredColumn(store, f"{name}_token") if name in token_attacks else None,
                              token_unit=units.get(name), info=get_attack(name).finish_info(infos[name]))
           for name in names}
    return out, missing, store


def _mode(info: dict) -> str | None:
    """How rmia/informia formed Pr(x): online, offline (a=...), or offline with a tuned."""
    if "tuned_a" in info:
        return f"offline, tuned a={info['tuned_a']:g}"
    if info.get("mode") == "offline":
        return f"offline, a={info.get('a', 1.0):g}"
    return info.get("mode")


def _splits_membership(splits, refs, given, samples, pop):
    """(reference membership [R, n], population's [R, m]) from the splits, in the order of the references; None without splits."""
    from memlens.splits import SplitsError

    if splits is None:
        return None
    if not refs:
        raise SplitsError("reference splits were given without reference models (--reference)")
    given = [given] if isinstance(given, (str, os.PathLike)) else list(given)
    names = [str(g) if isinstance(g, (str, os.PathLike)) else h.name for g, h in zip(given, refs)]
    m = splits.membership(names, [s.text for s in samples], [s.id for s in samples], "audited texts")
    pm = splits.membership(names, [s.text for s in pop], [s.id for s in pop], "population texts") if pop else None
    return m, pm


def _out_comparisons(memberships, t, refs, samples, pop, cache, settings):
    """Token comparisons whose q mixes, per text, only the references OUT for it
    (:func:`memlens.passes.causal.out_reference_comparison`): (audited texts', population's); None without splits."""
    from memlens.passes.causal import out_reference_comparison

    if memberships is None:
        return None
    m, pm = memberships
    comp = out_reference_comparison(t, refs, [s.text for s in samples], m, cache, settings)
    # population texts OUT for every reference (no population splits) keep the all-reference mixture
    pop_comp = (out_reference_comparison(t, refs, [s.text for s in pop], pm, cache, settings)
                if comp is not None and pop and pm is not None else None)
    return comp, pop_comp


def _apply_splits(splits, memberships, out_comparisons, inp: AttackInput):
    """Set the AttackInput's reference membership and its per-text OUT-reference token comparisons."""
    from memlens.splits import SplitsError

    if splits is None:
        return None
    inp.reference_membership, inp.population_reference_membership = memberships
    try:
        inp.__post_init__()  # AttackInput's shape checks
    except ValueError as e:
        raise SplitsError(str(e)) from None
    comp, pop_comp = out_comparisons
    if comp is not None:
        inp.comparison = comp
        if pop_comp is not None:
            inp.population_comparison = pop_comp
    return splits


def check_attack_selection(names: Sequence[str], attack_params: dict[str, dict] | None) -> None:
    """No attacks at all, or parameters for an attack that is not run (a typo, or one left out of
    --attacks), would be silently ignored: one-line errors before any model runs."""
    if not names:
        raise DataError("no attacks selected; give --attacks all or a comma-separated list (memlens attacks lists them)")
    for n in attack_params or {}:
        get_attack(n)  # an unknown name: its own error, listing the known attacks
        if n not in names:
            raise DataError(f"parameters given for attack {n!r}, which is not being run (attacks: {', '.join(names)}); "
                            f"add it to --attacks or drop -p {n}.*")


def check_duplicate_texts(samples: Sequence[Sample]) -> list[str]:
    """One text given as member and as non-member cannot be both: an error naming both ids. The same
    text twice with one label counts twice in the metrics: a note (results.json and the CLI)."""
    from memlens.cache import text_hash

    first: dict[str, Sample] = {}
    repeats: list[tuple[Sample, Sample]] = []
    for smp in samples:
        # a chat's text is rendered later (with the target's chat template): compare its messages
        h = text_hash(json.dumps(smp.meta.get("messages"), sort_keys=True) if is_chat(smp.meta) else smp.text)
        seen = first.setdefault(h, smp)
        if seen is smp:
            continue
        if seen.label is not None and smp.label is not None and seen.label != smp.label:
            raise DataError(f"texts {seen.id!r} (label {seen.label}) and {smp.id!r} (label {smp.label}) are the same text: "
                            "a text cannot be both a member and a non-member; remove one")
        repeats.append((seen, smp))
    if not repeats:
        return []
    a, b = repeats[0]
    return [f"{len(repeats)} texts repeat an earlier text with the same label (e.g. {b.id!r} = {a.id!r}); each copy counts in the metrics"]


def _note_left_out(result: AuditResult, attacks, **have) -> None:
    """Say which attacks --attacks all left out, and why (a note in results.json, the CLI and the report)."""
    from memlens.attacks import all_note, left_out_of_all

    if attacks == "all" or list(attacks) == ["all"]:
        note = all_note(left_out_of_all(**have))
        if note:
            result.notes.append(note)


def _calibrate_leaks(result: AuditResult, pop_comparison) -> None:
    """``result.extra["leak_threshold"]``: the token level that 0.1% of non-member tokens exceed (memlens.leakage),
    for the token attack the report and ``memlens show`` use; the population's tokens when there are no non-members.
    Its ``text`` entry: the null texts' tail statistics, by which a text is flagged as leaking (at most 1% of
    non-member texts are), and how many texts of each label are flagged."""
    from memlens.attacks.informia import token_informia_bits
    from memlens.leakage import calibrate

    attack = "informia_token" if "informia_token" in result.token_scores else next(iter(result.token_scores), None)
    if attack is None:
        return
    pop_tokens = None
    if attack == "informia_token" and pop_comparison is not None:
        comp = pop_comparison
        pop_tokens = [_as_saved(token_informia_bits(lr, kl)) for lr, kl in
                      zip(comp.log_ratio, comp.kl if comp.kl is not None else [None] * len(comp.log_ratio))]
    unit = str((result.attack_info.get(attack) or {}).get("unit") or {"informia_token": "bits", "minkpp": "z"}.get(attack, "score"))
    # float32, as token_scores.parquet keeps them: `memlens show` and the report recount the same tokens above the level
    toks = [_as_saved(t) for t in result.token_scores[attack]]
    result.extra["leak_threshold"] = calibrate(toks, [s.label for s in result.samples], [str(s.id) for s in result.samples],
                                               attack=attack, unit=unit, population_tokens=pop_tokens)


def _as_saved(tokens) -> np.ndarray:
    # float32, as saved; memlens.leakage converts to float64 (exactly) where it computes, one function at a time,
    # so no float64 copy of every token is held through the calibration
    return np.asarray(tokens, dtype=np.float32)


def _audit_masked(target, references, samples, attacks, attack_params, tokenizer, options, masked_opts, cache_dir,
                  max_length, cache_only, progress, seed, fprs, n_bootstrap) -> AuditResult:
    """The audit of a masked / diffusion LM: the masked pass, then SAMA and its baselines."""
    from memlens.models.masked import as_masked_handle
    from memlens.passes.masked import masked_attack_input, score_masked

    kw = {k: masked_opts[k] for k in ("auto_class", "mask_token_id", "shift_logits") if masked_opts.get(k) is not None}
    pass_kw = {k: masked_opts[k] for k in ("steps", "alpha_min", "alpha_max", "nested") if masked_opts.get(k) is not None}
    t = as_masked_handle(target, tokenizer, options=options, **kw)
    ref_list = [] if references is None else (list(references) if isinstance(references, (list, tuple)) else [references])
    refs = [as_masked_handle(r, tokenizer or (t.tokenizer if hasattr(r, "forward") else None), options=options, **kw) for r in ref_list]
    names = resolve_attack_names(attacks, have_reference=bool(refs), have_population=False, model_kind="masked")
    check_attack_selection(names, attack_params)
    for n in names:
        spec = get_attack(n)
        spec.resolve_params((attack_params or {}).get(n))
        if spec.needs_reference and not refs:
            raise DataError(f"attack {n!r} needs a reference model (--reference)")
    cache = StatsCache(default_cache_dir() if cache_dir == "default" else cache_dir)
    extras = score_masked(t, refs, [s.text for s in samples], cache=cache, seed=seed, max_length=max_length,
                          progress=progress, cache_only=cache_only, **pass_kw)
    inp = masked_attack_input([s.text for s in samples], extras)
    results = run_attacks(inp, names, attack_params)
    bundle = StatsBundle(inp.target, inp.references, None, extras.computed, list(extras.notes))
    result = _assemble(samples, t, refs, results, bundle, names, attack_params, PassSettings(max_length=max_length), fprs,
                       n_bootstrap, seed, 0)
    result.settings["model_kind"] = "masked"
    result.settings["masked_pass"] = extras.settings
    _note_left_out(result, attacks, have_reference=bool(refs), have_population=False, model_kind="masked")
    return result


def _assemble(samples, t, refs, results, bundle, names, attack_params, settings, fprs, n_bootstrap, seed, n_pop,
              timings: dict[str, float] | None = None, source: StatsSource | None = None,
              store: TokenStore | None = None) -> AuditResult:
    """The AuditResult from the attacks' results: ``bundle`` holds every text's statistics, or (attacks run in
    chunks) it is None and ``store`` holds the token-level results, ``source`` the statistics."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    table: dict[str, Any] = {"id": [s.id for s in samples], "label": [s.label for s in samples]}
    if any("tier" in s.meta for s in samples):
        table["tier"] = [s.meta.get("tier") for s in samples]
    for n in names:
        table[n] = results[n].scores
    scores = pd.DataFrame(table)
    if "tier" in table and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in table["tier"] if v is not None):
        scores["tier"] = scores["tier"].astype("Int64")  # 1, 4, 16 (not 1.0 beside the non-members' empty tier)
    labelled = [s.label is not None for s in samples]
    metrics: dict[str, AttackMetrics] = {}
    notes = list(bundle.notes if bundle is not None else source.notes)
    # Every attack's metrics at once (memlens.metrics.evaluate_many: the bootstrap resamples drawn once for all
    # attacks, each chunk of them spread over a thread pool; numpy releases the GIL in the array work).
    # at most 4 threads: each holds a chunk's temporaries (~100 MB, metrics.BOOTSTRAP_CELLS)
    columns: dict[str, np.ndarray] = {}
    if all(labelled) and {s.label for s in samples} == {0, 1}:
        labels = np.array([s.label for s in samples])
        for n in names:
            sc = results[n].scores
            bad = ~np.isfinite(sc)
            if bad.any():
                notes.append(f"{n}: {int(bad.sum())} texts got no finite score and count as the least likely members")
                sc = np.where(bad, np.nanmin(np.where(bad, np.nan, sc)) - 1 if (~bad).any() else 0.0, sc)
            columns[n] = sc
        with ThreadPoolExecutor(max(1, min(len(names), os.cpu_count() or 1, 4)), thread_name_prefix="memlens-metrics") as pool:
            metrics = evaluate_many(labels, columns, fprs=fprs, n_bootstrap=n_bootstrap, seed=seed, pool=pool)  # the attacks' order
    timings["metrics"] = time.perf_counter() - t0
    # from the character spans, made when asked for (the report's few texts; token_scores.parquet from the
    # texts' bytes): no tokenizer.decode per token, no Python string per token kept (memlens.tokens says why)
    t1 = time.perf_counter()
    if store is None:
        strings = TokenStrings([s.text for s in samples], [st.span_start for st in bundle.target],
                               [st.span_end for st in bundle.target])
        ref_lp = reference_logprobs_of(bundle.target, bundle.comparison)
        target_stats = bundle.target
    else:  # read back when asked for: the store's token strings and reference log-probabilities, the cache's statistics
        strings = StoredColumn(store, "tokens")
        ref_lp = StoredColumn(store, "reference_logprob") if "reference_logprob" in store.columns() else None
        target_stats = source.target_view()
    timings["token strings"] = time.perf_counter() - t1
    settings_d = {
        "target": t.describe(), "references": [r.describe() for r in refs], "attacks": list(names),
        "attack_params": {n: get_attack(n).resolve_params((attack_params or {}).get(n)) for n in names},
        "pass": {"max_length": settings.max_length, "stride": settings.stride, "temperature": settings.temperature},
        "n_population": n_pop, "seed": seed, "n_bootstrap": n_bootstrap, "fprs": list(fprs),
        "python": platform.python_version(),
    }
    # the token view's colour scales, saved so that `memlens show` reads one text, not all (memlens.tokens.colour_scale)
    # and the report's slider ranges, from the same pass over every token score (memlens.tokens.token_spread)
    spreads = {n: token_spread(np.asarray(t, dtype=np.float32) for t in r.token_scores)
               for n, r in results.items() if r.token_scores is not None}
    scales = {n: None if sp is None else sp["scale"] for n, sp in spreads.items()}
    ranges = {n: [sp["lo"], sp["hi"]] for n, sp in spreads.items() if sp is not None}
    return AuditResult(
        samples=samples, scores=scores, metrics=metrics, extra={"token_scales": scales, "token_ranges": ranges},
        token_scores={n: r.token_scores for n, r in results.items() if r.token_scores is not None},
        target_stats=target_stats, token_strings=strings, settings=settings_d,
        attack_info={n: r.info for n, r in results.items()}, notes=notes, reference_logprobs=ref_lp, timings=timings,
        token_store=store,
    )
