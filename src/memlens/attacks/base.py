"""The attack registry and the inputs every attack receives.

An attack is a pure function ``fn(inp: AttackInput, **params) -> AttackResult``: it never runs a
model. Adding an attack is one module with one ``@register(...)`` function, imported in
``memlens/attacks/__init__.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from memlens.stats import TokenStats


class AttackError(ValueError):
    """An attack cannot run on the inputs given (e.g. it needs a reference model)."""


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


@dataclass
class AttackResult:
    """Sequence scores (higher = more likely a member) and optional per-token scores."""

    scores: np.ndarray
    token_scores: list[np.ndarray] | None = None
    token_unit: str | None = None  # e.g. "bits"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    choices: tuple | None = None


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: Callable[..., AttackResult]
    description: str
    params: dict[str, Param]
    needs_reference: bool = False
    needs_population: bool = False
    model_kind: str = "causal"  # "causal" or "masked"
    in_all: bool = True  # False: run only when named (not part of "all")

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults updated by ``given``; unknown names and bad choices are errors."""
        given = dict(given or {})
        unknown = set(given) - set(self.params)
        if unknown:
            raise AttackError(f"attack {self.name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(self.params)}")
        out = {k: p.default for k, p in self.params.items()}
        for k, v in given.items():
            default = self.params[k].default
            if isinstance(default, bool) and isinstance(v, str):
                v = v.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(v, str):
                try:
                    v = type(default)(float(v)) if isinstance(default, int) and float(v).is_integer() else float(v)
                except ValueError:
                    raise AttackError(f"attack {self.name!r}: {k}={v!r} is not a number") from None
            choices = self.params[k].choices
            if choices is not None and v not in choices:
                raise AttackError(f"attack {self.name!r}: {k}={v!r} is not one of {list(choices)}")
            out[k] = v
        return out

    def __call__(self, inp: AttackInput, **params: Any) -> AttackResult:
        if self.needs_reference and not inp.references:
            raise AttackError(f"attack {self.name!r} needs a reference model (--reference)")
        if self.needs_population and not inp.population_target:
            raise AttackError(f"attack {self.name!r} needs population texts (--population)")
        result = self.fn(inp, **self.resolve_params(params))
        scores = np.asarray(result.scores, dtype=np.float64)
        if scores.shape != (len(inp),):
            raise RuntimeError(f"attack {self.name!r} returned {scores.shape} scores for {len(inp)} texts")
        result.scores = scores
        return result


REGISTRY: dict[str, AttackSpec] = {}


def register(
    name: str,
    *,
    description: str,
    params: dict[str, Param] | None = None,
    needs_reference: bool = False,
    needs_population: bool = False,
    model_kind: str = "causal",
    in_all: bool = True,
):
    """Register ``fn(inp, **params) -> AttackResult`` under ``name`` (``in_all=False``: left out of
    ``--attacks all``, run only when named)."""

    def deco(fn: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
        if name in REGISTRY:
            raise ValueError(f"attack {name!r} registered twice")
        REGISTRY[name] = AttackSpec(name, fn, description, dict(params or {}), needs_reference, needs_population, model_kind,
                                    in_all)
        return fn

    return deco


def get_attack(name: str) -> AttackSpec:
    if name not in REGISTRY:
        raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the floor(k * n) smallest values (at least one). k is a fraction in (0, 1]."""
    if not 0 < k <= 1:
        raise AttackError(f"k must be a fraction in (0, 1], got {k}")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    # floor(k * n) as in the Min-K% and MIMIR code, but never zero tokens.
    n = max(1, int(k * values.size))
    return float(np.sort(values)[:n].mean())
