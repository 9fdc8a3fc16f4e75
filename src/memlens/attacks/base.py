"""The attack registry and the inputs every attack receives.

An attack is a pure function ``fn(inp: AttackInput, **params) -> AttackResult``: it never runs a
model. ``AttackInput`` and the types in it live in :mod:`memlens.stats` (they are the passes'
output); this module re-exports them. Adding an attack is one module with one ``@register(...)`` function, imported in
``memlens/attacks/__init__.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from memlens.errors import AttackError  # noqa: F401  (re-exported: its old home)
from memlens.stats import AttackInput, ReferenceView, TokenComparison, TokenStats  # noqa: F401  (re-exported)


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
    model_kind: str = "causal"  # "causal" or "masked": which pass makes its inputs
    in_all: bool = True  # False: run only when named (not part of "all")
    # What the attack needs of the pass beyond the defaults: ``fn(resolved params) -> (paired
    # reductions, pair settings)`` (see memlens.models.reductions.PAIR_REDUCTIONS), or None.
    pass_requirements: Callable[[dict[str, Any]], tuple[tuple[str, ...], dict[str, Any]]] | None = None
    # Whether a text's score depends only on that text (with the references and the population), for these
    # resolved params: then the audit may run the attack over chunks of texts (memory bounded by the chunk)
    # and join the scores. A bool, or ``fn(resolved params) -> bool``.
    per_text: bool | Callable[[dict[str, Any]], bool] = True
    # Info that summarizes every text (a median over texts): the attack puts per-text arrays under keys that
    # start with "_", and ``finish(info) -> info`` replaces them by the summary, once, after every chunk
    # (their arrays concatenated). None: the info has no such keys.
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def runs_per_text(self, given: dict[str, Any] | None = None) -> bool:
        """Whether the audit may run this attack over chunks of texts with these params (see ``per_text``)."""
        return self.per_text(self.resolve_params(given)) if callable(self.per_text) else bool(self.per_text)

    def pass_needs(self, given: dict[str, Any] | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The paired reductions and pair settings this attack adds to the pass (none by default)."""
        if self.pass_requirements is None:
            return (), {}
        return self.pass_requirements(self.resolve_params(given))

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
        """The attack on every text of ``inp``."""
        result = self.run_chunk(inp, **params)
        result.info = self.finish_info([result.info])
        return result

    def run_chunk(self, inp: AttackInput, **params: Any) -> AttackResult:
        """The attack on one chunk of texts: its info still holds the per-text "_" arrays (:meth:`finish_info`)."""
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

    def finish_info(self, infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One info from the chunks' infos: each "_" key's arrays concatenated and summarized by ``finish``;
        any other key as the first chunk gave it (an attack whose other info differs between chunks is
        not ``per_text``)."""
        info = dict(infos[0]) if infos else {}
        for k in [k for k in info if k.startswith("_")]:
            info[k] = np.concatenate([np.asarray(i[k]).reshape(-1) for i in infos if k in i])
        if self.finish is not None:
            info = self.finish(info)
        return {k: v for k, v in info.items() if not k.startswith("_")}


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
    pass_requirements: Callable[[dict[str, Any]], tuple[tuple[str, ...], dict[str, Any]]] | None = None,
    per_text: bool | Callable[[dict[str, Any]], bool] = True,
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
):
    """Register ``fn(inp, **params) -> AttackResult`` under ``name`` (``in_all=False``: left out of
    ``--attacks all``, run only when named; ``pass_requirements``, ``per_text``, ``finish``: see :class:`AttackSpec`)."""

    def deco(fn: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
        if name in REGISTRY:
            raise ValueError(f"attack {name!r} registered twice")
        REGISTRY[name] = AttackSpec(name, fn, description, dict(params or {}), needs_reference, needs_population, model_kind,
                                    in_all, pass_requirements, per_text, finish)
        return fn

    return deco


def get_attack(name: str) -> AttackSpec:
    if name not in REGISTRY:
        raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def attacks_of_kind(model_kind: str) -> tuple[str, ...]:
    """Names of the registered attacks for one kind of model ("causal" or "masked"), in registration order."""
    return tuple(n for n, spec in REGISTRY.items() if spec.model_kind == model_kind)


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
