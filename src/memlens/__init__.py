"""memlens: audit language models for training-data memorization.

>>> import memlens
>>> result = memlens.audit(target="./target", references=["./base"],
...                        members="members.jsonl", nonmembers="nonmembers.jsonl")
>>> result.metrics["informia"].auc

The names below load on first use (PEP 562), so ``import memlens`` (and ``memlens --help``, and
``import memlens.testbed.profiles``) does not import torch, pandas or scikit-learn.
"""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from memlens._version import __version__

if TYPE_CHECKING:
    from memlens.attacks import REGISTRY as ATTACKS
    from memlens.audit import AuditResult, EvalSettings, audit, score_texts
    from memlens.models.handle import LoadOptions
    from memlens.passes.causal import PassSettings
    from memlens.stats import TokenStats

# public name -> (module, attribute)
_LAZY = {
    "audit": ("memlens.audit", "audit"),
    "score_texts": ("memlens.audit", "score_texts"),
    "AuditResult": ("memlens.audit", "AuditResult"),
    "ATTACKS": ("memlens.attacks", "REGISTRY"),
    "TokenStats": ("memlens.stats", "TokenStats"),
    # the grouped settings of memlens.audit
    "LoadOptions": ("memlens.models.handle", "LoadOptions"),
    "PassSettings": ("memlens.passes.causal", "PassSettings"),
    "EvalSettings": ("memlens.audit", "EvalSettings"),
}

__all__ = ["audit", "score_texts", "AuditResult", "ATTACKS", "TokenStats", "LoadOptions", "PassSettings", "EvalSettings",
           "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'memlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Face(types.ModuleType):
    """Importing the submodule ``memlens.audit`` binds it as the package attribute ``audit``,
    which would hide the function of that name; keep ``memlens.audit`` the function, as it was
    when the face imported it eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == _LAZY[name][0]:
            value = getattr(value, _LAZY[name][1])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
