"""The masked pass: masked / diffusion LMs and texts in, cached per-position masked losses out.

The probe itself (masking configurations, the scorer) is :mod:`memlens.models.masked`; this
module decides which texts are missing from the cache, runs every model that lacks a text on the
same masked inputs, writes the records (one namespace per model), and builds what the masked-LM
attacks receive (:class:`~memlens.stats.MaskedExtras` in an :class:`~memlens.stats.AttackInput`).

Cache records hold, per text: ``token_ids``/``span_start``/``span_end`` ``[L]`` and ``mask``
(uint8) / ``nll`` (float32) ``[L, S]`` (position-major, so records of texts of any length share
the trailing dimension).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from memlens.cache import Record, StatsCache, text_hash
from memlens.errors import CacheMissError, MaskedLMError
from memlens.models.handle import LoadOptions, ModelHandle
from memlens.models.masked import (
    MaskedModelHandle,
    MaskedPassSettings,
    MaskedScorer,
    MaskedTokens,
    as_masked_handle,
    mask_densities,
    sample_masks,
    tokenize_for_masking,
)
from memlens.passes._shared import distributed_state
from memlens.stats import AttackInput, MaskedExtras, MaskedProbe, ReferenceView, TokenStats


# --------------------------------------------------------------------------------------------
# Cached computation
# --------------------------------------------------------------------------------------------
# ``context`` is the input length texts are cut to: the shortest context of the models that run
# together (and --max-length), so a target scored beside a shorter-context reference gets its own key.
def _model_key(h: MaskedModelHandle, settings: MaskedPassSettings, context: int) -> dict:
    mid, shift = h.mask_behaviour()
    return {"kind": "masked", "model": h.fingerprint, "load": h.numerics, "tokenizer": h.tokenizer_fingerprint, "mask_token_id": mid,
            "shift_logits": shift, "attention_mask": h.attention_mask, "context": int(context), **settings.key()}


def _record(tk: MaskedTokens, mask: np.ndarray, nll: np.ndarray) -> Record:
    return {"token_ids": np.asarray(tk.ids, dtype=np.int64)[tk.positions], "span_start": tk.spans[:, 0].copy(),
            "span_end": tk.spans[:, 1].copy(), "mask": mask.T.astype(np.uint8), "nll": nll.T.astype(np.float32)}


def compute_masked(target: MaskedModelHandle, references: Sequence[MaskedModelHandle], texts: Sequence[str],
                   cache: StatsCache, settings: MaskedPassSettings, *, flush_every: int = 256) -> MaskedExtras:
    """Per-position masked losses of ``texts`` under the target and every reference, cached."""
    texts = list(texts)
    refs = list(references)
    for r in refs:
        if r.tokenizer_fingerprint != target.tokenizer_fingerprint:
            raise MaskedLMError(f"reference {r.name} has another tokenizer than the target: the masked-LM attacks compare "
                                "both models on the same masked token ids, so they need one tokenizer")
    handles = [target, *refs]
    limit = min(h.context_length() for h in handles)
    context = min(settings.max_length or limit, limit)
    spaces = [cache.namespace(_model_key(h, settings, context)) for h in handles]
    keys = [text_hash(t) for t in texts]
    unique: dict[str, int] = {}
    for i, k in enumerate(keys):
        unique.setdefault(k, i)
    computed = 0
    notes: list[str] = []
    state = distributed_state()
    if state is not None:
        state.wait_for_everyone()  # every process must see the same cache state before splitting the work
    # Run each model on the texts its namespace lacks; models sharing missing texts run together.
    missing = [set(ns.missing(unique)) for ns in spaces]
    groups: dict[frozenset, list[int]] = {}
    for k in unique:
        who = frozenset(m for m in range(len(handles)) if k in missing[m])
        if who:
            groups.setdefault(who, []).append(unique[k])
    if groups and settings.cache_only:
        n = len({i for idx in groups.values() for i in idx})
        raise CacheMissError(f"{n} texts have no cached masked-LM losses for these models and settings; run `memlens audit` "
                             "first (same models, seed, masking steps and densities)")
    for who, all_idx in groups.items():
        # Under torchrun each process scores every WORLD_SIZE-th text; all read the cache afterwards.
        idx = all_idx if state is None else all_idx[state.process_index::state.num_processes]
        if not idx:
            continue
        members = sorted(who)
        computed += len(idx)
        hs = [handles[m] for m in members]
        tok = target.tokenizer
        behaviours = [h.mask_behaviour() for h in hs]
        scorer = MaskedScorer([h.model for h in hs], tok, [b[0] for b in behaviours], [b[1] for b in behaviours], settings,
                              attention_mask=all(h.attention_mask for h in hs), max_length=context)
        toks = [tokenize_for_masking(tok, texts[i], scorer.max_length, behaviours[0][0]) for i in idx]
        n_trunc = sum(t.truncated for t in toks)
        if n_trunc:
            notes.append(f"{n_trunc} texts are longer than {scorer.max_length} tokens and were truncated for the masked pass")
        masks = [sample_masks(len(t.positions), keys[i], settings) for t, i in zip(toks, idx)]
        buf: list[dict[str, Record]] = [dict() for _ in members]

        def flush() -> None:
            for m, b in zip(members, buf):
                spaces[m].put(dict(b))
                b.clear()

        def done(j: int, nlls: list[np.ndarray]) -> None:
            for b, nll in zip(buf, nlls):
                b[keys[idx[j]]] = _record(toks[j], masks[j], nll)
            if len(buf[0]) >= flush_every:
                flush()

        try:
            scorer.score(toks, masks, on_text_done=done)
        finally:
            flush()  # whatever finished is kept, also when the run is interrupted
    if state is not None:
        state.wait_for_everyone()
        for ns in spaces:
            ns.refresh()  # read what the other processes wrote

    recs = [ns.get(keys) for ns in spaces]
    probes = []
    for k in keys:
        t = recs[0][k]
        mask = np.asarray(t["mask"], dtype=bool).T
        ref_nlls = []
        for m in range(1, len(handles)):
            r = recs[m][k]
            if not np.array_equal(np.asarray(r["mask"], dtype=bool).T, mask):
                raise RuntimeError("target and reference records of a text hold different masks (a corrupted cache?)")
            ref_nlls.append(np.asarray(r["nll"], dtype=np.float32).T)
        nll_ref = np.mean(ref_nlls, axis=0).astype(np.float32) if ref_nlls else None
        probes.append(MaskedProbe(np.asarray(t["token_ids"], dtype=np.int64), np.asarray(t["span_start"], dtype=np.int64),
                                  np.asarray(t["span_end"], dtype=np.int64), mask, np.asarray(t["nll"], dtype=np.float32).T,
                                  nll_ref, ref_nlls))
    return MaskedExtras(probes=probes, keys=keys, alphas=mask_densities(settings.steps, settings.alpha_min, settings.alpha_max),
                        settings=settings.key(), target=target.name, references=[r.name for r in refs], computed=computed,
                        notes=notes)


def score_masked(target: Any, references: Any = None, texts: Sequence[str] = (), *, tokenizer: Any = None,
                 cache: StatsCache | str | None = None, seed: int = 0, steps: int = 16, alpha_min: float = 0.05,
                 alpha_max: float = 0.5, nested: bool = True, max_length: int | None = None,
                 batch_tokens: int | None = None, mask_token_id: int | None = None, shift_logits: bool | None = None,
                 auto_class: str = "AutoModelForMaskedLM", attention_mask: bool = True,
                 options: LoadOptions | None = None, progress: bool = False, cache_only: bool = False) -> MaskedExtras:
    """Masked-LM losses of ``texts`` under ``target`` and ``references``: the ``extras["masked"]`` of SAMA.

    ``target``/``references``: :class:`MaskedModelHandle`/:class:`~memlens.models.handle.ModelHandle`,
    in-memory modules (pass ``tokenizer``), local directories or hub ids (loaded safely as
    ``auto_class``; LLaDA/Dream need ``auto_class="AutoModel"`` and ``trust_remote_code`` in
    ``options``). ``cache``: a :class:`~memlens.cache.StatsCache`, a directory, or None (in memory).
    ``seed``: with each text's SHA-256 it seeds that text's masks. ``cache_only``: raise
    :class:`~memlens.errors.CacheMissError` instead of running a model when a text is not cached.
    """
    if isinstance(cache, StatsCache):
        sc = cache
    else:
        sc = StatsCache(cache)
    kw = dict(auto_class=auto_class, mask_token_id=mask_token_id, shift_logits=shift_logits, attention_mask=attention_mask)
    t = as_masked_handle(target, tokenizer, options=options, **kw)
    if references is None:
        references = []
    elif isinstance(references, (str, ModelHandle, torch.nn.Module)) or hasattr(references, "__fspath__"):
        references = [references]
    refs = [as_masked_handle(r, tokenizer if tokenizer is not None else t.tokenizer, options=options, **kw) for r in references]
    settings = MaskedPassSettings(steps=steps, alpha_min=alpha_min, alpha_max=alpha_max, nested=nested, seed=seed,
                                  max_length=max_length, batch_tokens=batch_tokens, progress=progress, cache_only=cache_only)
    return compute_masked(t, refs, texts, sc, settings)


def masked_attack_input(texts: Sequence[str], extras: MaskedExtras):
    """An :class:`~memlens.attacks.base.AttackInput` for the masked-LM attacks.

    ``AttackInput`` requires per-text target statistics (and reference views for attacks that
    need a reference); for masked LMs these are *pseudo* statistics over the text's maskable
    tokens: ``logprob`` = minus the mean NLL of the token over the steps that mask it (NaN if no
    step does), other fields NaN/0. The real data is ``extras["masked"]``.
    """
    def pseudo(p: MaskedProbe, nll: np.ndarray) -> TokenStats:
        n = p.n_tokens
        with np.errstate(invalid="ignore"), _nanmean_quiet():
            lp = -np.nanmean(nll, axis=0) if p.n_steps else np.full(n, np.nan)
        nan = np.full(n, np.nan, dtype=np.float32)
        return TokenStats(p.token_ids, lp.astype(np.float32), nan, nan, nan, np.zeros(n, dtype=np.int64),
                          p.span_start, p.span_end)

    if len(texts) != len(extras):
        raise ValueError(f"{len(texts)} texts but masked data for {len(extras)}")
    target = [pseudo(p, p.nll_target) for p in extras.probes]
    refs = [ReferenceView(name, [pseudo(p, p.nll_refs[j]) for p in extras.probes]) for j, name in enumerate(extras.references)]
    return AttackInput(texts=list(texts), target=target, references=refs, extras={"masked": extras})


class _nanmean_quiet:
    """Silences numpy's "mean of empty slice" for tokens no step masks (their NaN is the answer)."""

    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
