"""The types the model passes produce and the attacks consume (numpy only: no torch here).

Every attack is a pure function of these arrays. A model runs once per (model, text); the
results are cached (see :mod:`memlens.cache`) and every attack setting after that is free. The
torch code that computes them lives in :mod:`memlens.models` (scorers, :mod:`~memlens.models.reductions`)
and :mod:`memlens.passes` (the cached passes).

Shapes: ``T`` is the number of *scored* tokens of a text (every token that has a left context;
when the tokenizer has a BOS token it is prepended, so every token of the text is scored).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Fields of TokenStats that are per-token arrays, and their dtypes (also the cache schema).
TOKEN_FIELDS: dict[str, np.dtype] = {
    "token_ids": np.dtype(np.int64),
    "logprob": np.dtype(np.float32),  # log p(x_t | x_<t), natural log
    "entropy": np.dtype(np.float32),  # H(p(. | x_<t)), nats
    "mean_logp": np.dtype(np.float32),  # mu_t = E_{v~p}[log p(v)] (= -entropy)
    "std_logp": np.dtype(np.float32),  # sigma_t = sqrt(E_p[(log p)^2] - mu_t^2)
    "rank": np.dtype(np.int64),  # 1 = the model's most likely token
    "span_start": np.dtype(np.int64),  # character span of the token in the original text
    "span_end": np.dtype(np.int64),
}


@dataclass
class TokenStats:
    """Per-token statistics of one text under one model. All arrays have length T."""

    token_ids: np.ndarray
    logprob: np.ndarray
    entropy: np.ndarray
    mean_logp: np.ndarray
    std_logp: np.ndarray
    rank: np.ndarray
    span_start: np.ndarray
    span_end: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        for name, dtype in TOKEN_FIELDS.items():
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"TokenStats.{name} has shape {arr.shape}, expected ({n},)")
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class ReferenceView:
    """One reference model's own statistics of each text (in the reference's tokenization)."""

    name: str
    stats: list[TokenStats]


@dataclass
class TokenComparison:
    """Target vs reference(s), aligned to the *target's* tokens of each text (nats).

    ``log_ratio[i]``: log p_target(x_t) - log q(x_t); ``kl[i]``: D_KL(q || p_target), with q the
    reference's next-token distribution (the mean of the references' distributions when there
    are several). ``kl`` is None when the models do not share a vocabulary: then only the
    log-ratio exists, aligned by character spans.
    """

    log_ratio: list[np.ndarray]
    kl: list[np.ndarray] | None
    note: str = ""


@dataclass
class AttackInput:
    """Everything an attack may look at, for n audited texts and m population texts."""

    texts: list[str]
    target: list[TokenStats]
    references: list[ReferenceView] = field(default_factory=list)
    comparison: TokenComparison | None = None
    population_texts: list[str] = field(default_factory=list)
    population_target: list[TokenStats] = field(default_factory=list)
    population_references: list[ReferenceView] = field(default_factory=list)
    population_comparison: TokenComparison | None = None
    # Model-kind specific data (e.g. masked-LM losses for SAMA), keyed by producer.
    extras: dict[str, Any] = field(default_factory=dict)
    # Which reference model was trained on which text, when the references were trained with known
    # splits (bool [R, n], rows in the order of ``references``; True = IN). None: every reference is
    # OUT for every text (a base model or an early checkpoint). With it, rmia/informia run online.
    reference_membership: np.ndarray | None = None
    # The same for the population texts (bool [R, m]); None: OUT for every reference.
    population_reference_membership: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.target):
            raise ValueError("texts and target stats differ in length")
        for ref in self.references:
            if len(ref.stats) != len(self.texts):
                raise ValueError(f"reference {ref.name} has stats for {len(ref.stats)} of {len(self.texts)} texts")
        self.reference_membership = _membership(self.reference_membership, len(self.references), len(self.texts), "reference")
        self.population_reference_membership = _membership(self.population_reference_membership, len(self.population_references),
                                                           len(self.population_texts), "population reference")

    def __len__(self) -> int:
        return len(self.texts)


def _membership(m: np.ndarray | None, n_refs: int, n_texts: int, what: str) -> np.ndarray | None:
    """A membership matrix as bool [n_refs, n_texts], or a one-line error."""
    if m is None:
        return None
    arr = np.asarray(m)
    if arr.shape != (n_refs, n_texts):
        raise ValueError(f"{what} membership has shape {arr.shape}, expected ({n_refs}, {n_texts}): one row per reference model")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{what} membership must hold only booleans or 0/1")
    return arr.astype(bool)

# ---------------------------------------------------------------------------------------------
# The masked pass's outputs (memlens.passes.masked): what SAMA and the DLM baselines receive as
# inp.extras["masked"]
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# LT-MIA (Ilic et al. 2026): the layout of the per-token block the paired pass computes
# (memlens.models.reductions) and the features read (memlens.ltmia.features).
# ---------------------------------------------------------------------------------------------
LTMIA_SPACES = ("logprob", "logit")


def ltmia_pair_dim(k: int) -> int:
    """Width of the "ltmia" paired reduction: truth (4) + head (4k) + tail (3k)."""
    return 7 * k + 4
