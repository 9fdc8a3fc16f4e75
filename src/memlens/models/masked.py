"""Masked and diffusion language models: load safely, mask progressively, record per-position losses.

This is the only place a masked / diffusion LM runs (the causal pass lives in
:mod:`memlens.models.causal`). Two kinds of model are supported:

* Hugging Face masked LMs (``AutoModelForMaskedLM``: BERT, RoBERTa, ModernBERT, ...), and
* LLaDA / Dream-style diffusion LMs, or any module whose forward takes ``input_ids`` (with masked
  positions replaced by a mask token id) and returns logits for every position (``out.logits``,
  ``out[0]`` or a tensor). Dream-style models predict position ``i`` from the logits at ``i - 1``
  (``shift_logits=True``).

The probe of a text (what SAMA and the DLM baselines need)
----------------------------------------------------------
A text is tokenized (with the model's special tokens, which are never masked); its ``L`` text
tokens are the maskable positions. ``S`` masking steps (default 16) have densities
``alpha_t = alpha_min + (t-1)/(S-1) (alpha_max - alpha_min)`` (t = 1..S, default 5%..50%); step t
masks ``k_t = max(1, ceil(alpha_t L))`` positions. With ``nested=True`` (default, "progressive"
masking as in the authors' code) the masks grow: step t masks the first ``k_t`` positions of one
random permutation of the text's positions, so every step's mask is uniformly random and contains
the previous one. With ``nested=False`` every step draws a fresh mask.

The permutation(s) are drawn from a generator seeded by ``(seed, sha256(text))`` only, so a text's
masks, and therefore its losses and scores, do not depend on the other texts in the run, on their
order or on the batch size.

All ``S`` masked copies of a text go through the model in one batch (several texts share a batch
when they fit), and every model (target and references) runs on exactly the same masked inputs.
For every step t and masked position i we record ``nll[t, i] = -log p(x_i | x with S_t masked)``
(natural log, full-precision log-softmax), NaN where position i is not masked at step t.

Cache records (one namespace per model; see :mod:`memlens.cache`) hold, per text:
``token_ids``/``span_start``/``span_end`` ``[L]`` and ``mask`` (uint8) / ``nll`` (float32) ``[L, S]``
(position-major, so records of texts of any length share the trailing dimension).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from memlens.cache import Record, StatsCache, text_hash
from memlens.models.loading import context_length, load_model
from memlens.pipeline import CacheMissError, LoadOptions, ModelHandle, _process_group
from memlens.stats import TokenStats

log = logging.getLogger("memlens")

MASKED_PASS_VERSION = 1

# Diffusion LMs whose tokenizer does not declare the mask token: model_type -> (mask id, shift).
KNOWN_DIFFUSION_LMS: dict[str, tuple[int, bool]] = {
    "llada": (126336, False),  # GSAI-ML/LLaDA-8B-*: bidirectional, logits at i predict x_i
    "dream": (151666, True),  # Dream-org/Dream-v0-*: AR-initialised, logits at i-1 predict x_i
}


class MaskedLMError(ValueError):
    """A masked / diffusion LM cannot be used as asked (no mask token, other vocabulary, ...)."""


# --------------------------------------------------------------------------------------------
# Settings and masking configurations
# --------------------------------------------------------------------------------------------
@dataclass
class MaskedPassSettings:
    """What determines the masked pass's numbers (all part of the cache key except batching)."""

    steps: int = 16
    alpha_min: float = 0.05
    alpha_max: float = 0.50
    nested: bool = True
    seed: int = 0
    max_length: int | None = None  # None: the model's context length
    batch_tokens: int | None = None  # rows x padded length per forward; None: by device
    vocab_chunk_rows: int = 1024  # masked positions per log-softmax chunk
    progress: bool = False
    cache_only: bool = False  # refuse to run a model (``memlens attack``): every text must be cached

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise MaskedLMError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.alpha_min <= self.alpha_max <= 1:
            raise MaskedLMError(f"need 0 < alpha_min <= alpha_max <= 1, got {self.alpha_min}, {self.alpha_max}")
        if int(self.seed) < 0:
            raise MaskedLMError(f"seed must be non-negative, got {self.seed}")

    def key(self) -> dict:
        return {"steps": int(self.steps), "alpha_min": float(self.alpha_min), "alpha_max": float(self.alpha_max),
                "nested": bool(self.nested), "seed": int(self.seed), "max_length": self.max_length,
                "version": MASKED_PASS_VERSION}


def mask_densities(steps: int, alpha_min: float = 0.05, alpha_max: float = 0.5) -> np.ndarray:
    """alpha_t = alpha_min + (t-1)/(T-1) (alpha_max - alpha_min), t = 1..T (alpha_min when T = 1)."""
    if steps == 1:
        return np.array([alpha_min], dtype=np.float64)
    t = np.arange(steps, dtype=np.float64)
    return alpha_min + t / (steps - 1) * (alpha_max - alpha_min)


def mask_counts(n_tokens: int, alphas: np.ndarray) -> np.ndarray:
    """k_t = max(1, ceil(alpha_t L)), at most L (0 for an empty text)."""
    if n_tokens <= 0:
        return np.zeros(len(alphas), dtype=np.int64)
    # Round before the ceiling so 0.05 * 20 (= 1.0000000000000002) masks 1 token, not 2.
    k = np.ceil(np.round(np.asarray(alphas) * n_tokens, 9)).astype(np.int64)
    return np.clip(k, 1, n_tokens)


def text_seed(seed: int, key: str, *purpose: int) -> np.random.SeedSequence:
    """A seed sequence for one text (``key`` = its SHA-256 hex) and purpose; batch independent."""
    return np.random.SeedSequence([int(key, 16), int(seed), *[int(p) for p in purpose]])


PURPOSE_MASKS = 0  # purposes of per-text random streams (attacks use others)
PURPOSE_SUBSETS = 1


def sample_masks(n_tokens: int, key: str, settings: MaskedPassSettings) -> np.ndarray:
    """Boolean [S, L] masking configurations of a text, a pure function of (L, key, settings)."""
    s = int(settings.steps)
    out = np.zeros((s, n_tokens), dtype=bool)
    if n_tokens == 0:
        return out
    ks = mask_counts(n_tokens, mask_densities(s, settings.alpha_min, settings.alpha_max))
    rng = np.random.default_rng(text_seed(settings.seed, key, PURPOSE_MASKS))
    perm = rng.permutation(n_tokens)
    for t, k in enumerate(ks):
        if not settings.nested and t > 0:
            perm = rng.permutation(n_tokens)
        out[t, perm[:k]] = True
    return out


# --------------------------------------------------------------------------------------------
# What attacks receive: inp.extras["masked"]
# --------------------------------------------------------------------------------------------
@dataclass
class MaskedProbe:
    """One text's masked-LM losses: S masking steps over its L maskable tokens.

    ``mask[t, i]``: position i is masked at step t. ``nll_target[t, i]`` / ``nll_ref[t, i]``:
    -log p(x_i | masked input of step t) under the target / the reference (the mean over
    references when there are several), NaN where ``mask[t, i]`` is False. ``nll_refs`` holds
    each reference's array.
    """

    token_ids: np.ndarray  # int64 [L]
    span_start: np.ndarray  # int64 [L], character span of each token in the text
    span_end: np.ndarray
    mask: np.ndarray  # bool [S, L]
    nll_target: np.ndarray  # float32 [S, L]
    nll_ref: np.ndarray | None = None  # float32 [S, L]
    nll_refs: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        shape = self.mask.shape
        if self.mask.ndim != 2 or shape[1] != len(self.token_ids):
            raise ValueError(f"mask has shape {shape}, expected [steps, {len(self.token_ids)}]")
        for name in ("nll_target", "nll_ref"):
            a = getattr(self, name)
            if a is not None and np.shape(a) != shape:
                raise ValueError(f"{name} has shape {np.shape(a)}, expected {shape}")

    @property
    def n_steps(self) -> int:
        return self.mask.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.mask.shape[1]

    def first_step(self) -> np.ndarray:
        """Per position, the first step at which it is masked (-1 if never)."""
        any_ = self.mask.any(axis=0)
        return np.where(any_, self.mask.argmax(axis=0), -1)


@dataclass
class MaskedExtras:
    """``AttackInput.extras["masked"]``: one :class:`MaskedProbe` per audited text, in order.

    ``keys[i]`` is the SHA-256 of text i (attacks seed their own sampling with it, so scores do
    not depend on batch composition); ``alphas`` the S masking densities; ``settings`` the pass
    settings (steps, alpha range, nested, seed, ...).
    """

    probes: list[MaskedProbe]
    keys: list[str]
    alphas: np.ndarray
    settings: dict
    target: str = ""
    references: list[str] = field(default_factory=list)
    computed: int = 0  # texts a model actually ran on in this call
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.probes)

    @property
    def has_reference(self) -> bool:
        return bool(self.probes) and all(p.nll_ref is not None for p in self.probes)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def resolve_mask_behaviour(model_type: str | None, tokenizer: Any, mask_token_id: int | None = None,
                           shift_logits: bool | None = None) -> tuple[int, bool]:
    """The mask token id and whether logits are shifted (Dream), from arguments, tokenizer, model type."""
    known = KNOWN_DIFFUSION_LMS.get(str(model_type or "").lower())
    if mask_token_id is None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
    if mask_token_id is None and known is not None:
        mask_token_id = known[0]
    if mask_token_id is None:
        raise MaskedLMError(
            "the tokenizer declares no mask token and the model is not a known diffusion LM: pass mask_token_id "
            "(--mask-token-id), or add one with memlens.testbed.diffusion.add_mask_token")
    if shift_logits is None:
        shift_logits = known[1] if known is not None else False
    return int(mask_token_id), bool(shift_logits)


class MaskedModelHandle(ModelHandle):
    """A masked / diffusion LM known by fingerprint; loads as ``auto_class`` only when needed.

    ``auto_class``: "AutoModelForMaskedLM" (default) or e.g. "AutoModel" for LLaDA/Dream (with
    ``trust_remote_code``). ``attention_mask``: pass an attention mask (then texts of different
    lengths share a batch with padding); when False only texts of one length share a batch.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, name: str | None = None, options: LoadOptions | None = None,
                 auto_class: str = "AutoModelForMaskedLM", mask_token_id: int | None = None,
                 shift_logits: bool | None = None, attention_mask: bool = True):
        super().__init__(model, tokenizer, name=name, options=options)
        self.auto_class = auto_class
        self._mask_token_id = mask_token_id
        self._shift_logits = shift_logits
        self.attention_mask = bool(attention_mask)
        if self._mask_token_id is None and getattr(self.tokenizer, "mask_token_id", None) is not None:
            self._mask_token_id = int(self.tokenizer.mask_token_id)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            assert self.spec is not None
            o = self.options
            log.info("loading %s as %s", self.name, self.auto_class)
            self._model = load_model(self.spec, auto_class=self.auto_class, device=o.device, dtype=o.dtype,
                                     trust_remote_code=o.trust_remote_code, allow_pickle=o.allow_pickle,
                                     device_map=o.device_map)
        return self._model

    def model_type(self) -> str:
        if self._model is not None:
            return str(getattr(getattr(self._model, "config", None), "model_type", "") or "")
        if self.spec is not None and (self.spec.path / "config.json").is_file():
            import json

            return str(json.loads((self.spec.path / "config.json").read_text()).get("model_type", ""))
        return ""

    def mask_behaviour(self) -> tuple[int, bool]:
        """(mask token id, shift_logits), without loading the weights."""
        if self._mask_token_id is None or self._shift_logits is None:
            self._mask_token_id, self._shift_logits = resolve_mask_behaviour(
                self.model_type(), self.tokenizer, self._mask_token_id, self._shift_logits)
        return int(self._mask_token_id), bool(self._shift_logits)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(kind="masked", auto_class=self.auto_class)
        return d


def as_masked_handle(m: Any, tokenizer: Any = None, *, options: LoadOptions | None = None, **kw: Any) -> MaskedModelHandle:
    """A :class:`MaskedModelHandle` from a handle, an in-memory module, a directory or a hub id."""
    if isinstance(m, MaskedModelHandle):
        return m
    if isinstance(m, ModelHandle):  # a plain handle: keep its identity, load as a masked LM
        h = MaskedModelHandle.__new__(MaskedModelHandle)
        h.__dict__.update(m.__dict__)
        h.auto_class = kw.get("auto_class", "AutoModelForMaskedLM")
        h._mask_token_id = kw.get("mask_token_id", getattr(h.tokenizer, "mask_token_id", None))
        h._shift_logits = kw.get("shift_logits")
        h.attention_mask = kw.get("attention_mask", True)
        return h
    return MaskedModelHandle(m, tokenizer, options=options, **kw)


def _forward_logits(model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor | None) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=attn) if attn is not None else model(input_ids=ids)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out[0]
    return logits


# --------------------------------------------------------------------------------------------
# Tokenization and the pass
# --------------------------------------------------------------------------------------------
@dataclass
class MaskedTokens:
    """A text as the model sees it: all input ids, and which of them are maskable text tokens."""

    ids: list[int]  # with the tokenizer's special tokens (CLS/SEP/BOS...), never masked
    positions: np.ndarray  # int64 [L]: indices into ids of the maskable text tokens
    spans: np.ndarray  # int64 [L, 2]
    truncated: bool = False


def tokenize_for_masking(tokenizer: Any, text: str, max_length: int, mask_token_id: int | None = None) -> MaskedTokens:
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    special = list(enc.get("special_tokens_mask") or [0] * len(ids))
    offsets = [tuple(map(int, o)) for o in enc["offset_mapping"]]
    truncated = False
    if len(ids) > max_length:
        # Keep the leading special tokens and the trailing ones (e.g. [SEP]) around the first text tokens.
        tail = 0
        while tail < len(ids) and special[len(ids) - 1 - tail]:
            tail += 1
        keep = max_length - tail
        ids = ids[:keep] + ids[len(ids) - tail:] if tail else ids[:keep]
        special = special[:keep] + special[len(special) - tail:] if tail else special[:keep]
        offsets = offsets[:keep] + offsets[len(offsets) - tail:] if tail else offsets[:keep]
        truncated = True
    pos = [i for i, s in enumerate(special) if not s and (mask_token_id is None or ids[i] != mask_token_id)]
    spans = np.asarray([offsets[i] for i in pos], dtype=np.int64).reshape(-1, 2)
    return MaskedTokens(ids, np.asarray(pos, dtype=np.int64), spans, truncated)


def _auto_batch_tokens(device: torch.device, n_params: int, vocab: int) -> int:
    if device.type != "cuda":
        return 8192
    free, _ = torch.cuda.mem_get_info(device)
    per_tok = 2 * vocab * 4 + n_params / 25_000 * 4  # logits (+ a float32 copy) and activations, bytes
    return int(max(512, min(1 << 20, free * 0.4 // per_tok)))


@dataclass
class _Row:
    text: int
    step: int
    length: int


class MaskedScorer:
    """Runs one or more masked LMs (sharing one tokenizer) on the masked copies of texts.

    ``models[k]`` comes with ``mask_ids[k]`` and ``shifts[k]``; all see the same input ids except
    for the mask token id substituted at masked positions.
    """

    def __init__(self, models: Sequence[torch.nn.Module], tokenizer: Any, mask_ids: Sequence[int],
                 shifts: Sequence[bool], settings: MaskedPassSettings, *, attention_mask: bool = True,
                 max_length: int | None = None):
        self.models = list(models)
        self.tokenizer = tokenizer
        self.mask_ids = [int(m) for m in mask_ids]
        self.shifts = [bool(s) for s in shifts]
        self.settings = settings
        self.attention_mask = attention_mask
        limit = max_length or min(context_length(m, tokenizer) for m in self.models)
        self.max_length = min(settings.max_length or limit, limit)
        dev = next(self.models[0].parameters()).device
        vocab = max(int(getattr(getattr(m, "config", None), "vocab_size", 0) or len(tokenizer)) for m in self.models)
        n_params = sum(p.numel() for p in self.models[0].parameters())
        self.batch_tokens = settings.batch_tokens or _auto_batch_tokens(dev, n_params, vocab)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.mask_ids[0]

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows of a text stay together; longest texts first; one length per batch without attention masks."""
        order = sorted(rows, key=lambda r: (-r.length, r.text, r.step))
        out: list[list[_Row]] = []
        cur: list[_Row] = []
        for r in order:
            width = cur[0].length if cur else r.length
            if cur and (width * (len(cur) + 1) > self.batch_tokens or (not self.attention_mask and r.length != width)):
                out.append(cur)
                cur = []
            cur.append(r)
        if cur:
            out.append(cur)
        return out

    @torch.inference_mode()
    def score(self, toks: Sequence[MaskedTokens], masks: Sequence[np.ndarray],
              on_text_done: Callable[[int, list[np.ndarray]], None] | None = None) -> dict[int, list[np.ndarray]]:
        """Per text i: one float32 [S, L] NLL array per model (NaN where not masked)."""
        from tqdm.auto import tqdm

        s = int(self.settings.steps)
        out: dict[int, list[np.ndarray]] = {i: [np.full(m.shape, np.nan, dtype=np.float32) for _ in self.models]
                                            for i, m in enumerate(masks)}
        pending = {i: s for i in out}
        rows = [_Row(i, t, len(tk.ids)) for i, tk in enumerate(toks) for t in range(s) if masks[i].shape[1] > 0]
        for i, m in enumerate(masks):  # texts without maskable tokens are done at once
            if m.shape[1] == 0:
                pending[i] = 0
                if on_text_done is not None:
                    on_text_done(i, out[i])
        bar = tqdm(total=len(rows), unit="row", desc="masked pass", disable=not self.settings.progress, leave=False)
        for batch in self._batches(rows):
            width = max(r.length for r in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            rr, cc, tgt, back = [], [], [], []
            for b, r in enumerate(batch):
                tk = toks[r.text]
                ids[b, : r.length] = torch.tensor(tk.ids)
                attn[b, : r.length] = 1
                sel = np.nonzero(masks[r.text][r.step])[0]  # indices into the text's maskable tokens
                cols = tk.positions[sel]
                rr.extend([b] * len(cols))
                cc.extend(cols.tolist())
                tgt.extend([tk.ids[c] for c in cols])
                back.extend((r.text, r.step, int(j)) for j in sel)
            rows_t = torch.tensor(rr, dtype=torch.long)
            cols_t = torch.tensor(cc, dtype=torch.long)
            tgt_t = torch.tensor(tgt, dtype=torch.long)
            for k, model in enumerate(self.models):
                dev = next(model.parameters()).device
                masked = ids.clone()
                masked[rows_t, cols_t] = self.mask_ids[k]
                logits = _forward_logits(model, masked.to(dev), attn.to(dev) if self.attention_mask else None)
                lcols = (cols_t - 1).clamp(min=0) if self.shifts[k] else cols_t
                nll = _nll_in_chunks(logits, rows_t.to(dev), lcols.to(dev), tgt_t.to(dev), self.settings.vocab_chunk_rows)
                del logits
                for (ti, st, j), v in zip(back, nll):
                    out[ti][k][st, j] = v
            for r in batch:
                pending[r.text] -= 1
                if pending[r.text] == 0 and on_text_done is not None:
                    on_text_done(r.text, out[r.text])
            bar.update(len(batch))
        bar.close()
        return out


def _nll_in_chunks(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, chunk: int) -> np.ndarray:
    parts = []
    for lo in range(0, len(rows), chunk):
        sl = slice(lo, lo + chunk)
        lg = logits[rows[sl], cols[sl]].float()
        parts.append((torch.logsumexp(lg, dim=-1) - lg.gather(1, targets[sl, None]).squeeze(1)).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


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
    dist = _process_group()
    if dist is not None:
        dist.barrier()  # every process must see the same cache state before splitting the work
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
        idx = all_idx if dist is None else all_idx[dist.get_rank()::dist.get_world_size()]
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
    if dist is not None:
        dist.barrier()
        for ns in spaces:
            ns._loaded = False  # re-read what the other processes wrote

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

    ``target``/``references``: :class:`MaskedModelHandle`/:class:`~memlens.pipeline.ModelHandle`,
    in-memory modules (pass ``tokenizer``), local directories or hub ids (loaded safely as
    ``auto_class``; LLaDA/Dream need ``auto_class="AutoModel"`` and ``trust_remote_code`` in
    ``options``). ``cache``: a :class:`~memlens.cache.StatsCache`, a directory, or None (in memory).
    ``seed``: with each text's SHA-256 it seeds that text's masks. ``cache_only``: raise
    :class:`~memlens.pipeline.CacheMissError` instead of running a model when a text is not cached.
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
    from memlens.attacks.base import AttackInput, ReferenceView

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
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
