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


def left_out_of_all(*, have_reference: bool, have_population: bool, model_kind: str = "causal") -> dict[str, str]:
    """The attacks for this kind of model that "all" leaves out, each with why (attacks for the other
    kind of model are not listed: they never apply)."""
    out = {}
    for name, spec in REGISTRY.items():
        if spec.model_kind != model_kind:
            continue
        if not spec.in_all:
            out[name] = f"not in 'all': name it (--attacks {name})"
        elif spec.needs_reference and not have_reference:
            out[name] = "needs a reference model (--reference)"
        elif spec.needs_population and not have_population:
            out[name] = "needs population texts (--population)"
    return out


def all_note(left_out: dict[str, str]) -> str | None:
    """One line for the audit's notes: what --attacks all left out and why."""
    if not left_out:
        return None
    return "--attacks all left out " + "; ".join(f"{n} ({why})" for n, why in left_out.items())


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
