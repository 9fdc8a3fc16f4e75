"""Integrations with training frameworks (``transformers.Trainer`` and TRL trainers)."""
from __future__ import annotations

__all__ = ["MemlensCallback"]


def __getattr__(name: str):
    # lazy: importing memlens.integrations must not import transformers' Trainer machinery
    if name == "MemlensCallback":
        from memlens.integrations.trainer import MemlensCallback

        return MemlensCallback
    raise AttributeError(name)
