"""Masked and diffusion language models: load safely, mask progressively, record per-position losses.

The masked scorer: a masked / diffusion LM runs only here (the cached pass around it is
:mod:`memlens.passes.masked`; the causal scorer is :mod:`memlens.models.causal`). Two kinds of model are supported:

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

The cache records of these losses are described in :mod:`memlens.passes.masked`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from memlens.errors import MaskedLMError  # noqa: F401  (re-exported: its old home)
from memlens.models.handle import LoadOptions, ModelHandle
from memlens.models.loading import context_length, load_model
from memlens.stats import MaskedExtras, MaskedProbe  # noqa: F401  (re-exported: their old home)

log = logging.getLogger("memlens")

MASKED_PASS_VERSION = 1

# Diffusion LMs whose tokenizer does not declare the mask token: model_type -> (mask id, shift).
KNOWN_DIFFUSION_LMS: dict[str, tuple[int, bool]] = {
    "llada": (126336, False),  # GSAI-ML/LLaDA-8B-*: bidirectional, logits at i predict x_i
    "dream": (151666, True),  # Dream-org/Dream-v0-*: AR-initialised, logits at i-1 predict x_i
}


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
        from memlens._progress import progress_bar as tqdm

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
