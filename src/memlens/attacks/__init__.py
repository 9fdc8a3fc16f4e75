"""Membership-inference attacks: pure functions of cached per-token statistics.

Importing this package registers every built-in attack in :data:`REGISTRY`.
"""
from memlens.attacks.base import (  # noqa: F401
    REGISTRY,
    AttackError,
    AttackInput,
    AttackResult,
    AttackSpec,
    Param,
    ReferenceView,
    TokenComparison,
    attacks_of_kind,
    get_attack,
    register,
)

# The import order is the registration order: the order of `--attacks all`, of the score columns
# and of attacks_of_kind(); keep it.
# isort: off
from memlens.attacks import loss, zlib, mink, minkpp, ref, rmia, informia, sama, dlm_baselines, ltmia  # noqa: F401,E402
# isort: on


def resolve_attack_names(names: list[str] | str, *, have_reference: bool, have_population: bool,
                         model_kind: str = "causal") -> list[str]:
    """Expand "all" to every attack for this kind of model whose inputs are available (except those
    registered with ``in_all=False``, e.g. ltmia); validate the rest."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if names == ["all"]:
        out = []
        for name, spec in REGISTRY.items():
            if spec.model_kind != model_kind or not spec.in_all or (spec.needs_reference and not have_reference):
                continue
            if spec.needs_population and not have_population:
                continue
            out.append(name)
        return out
    for n in names:
        kind = get_attack(n).model_kind
        if kind != model_kind:
            raise AttackError(f"attack {n!r} is for {kind} LMs; use --model-kind {kind}")
    return list(names)
