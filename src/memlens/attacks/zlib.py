"""Zlib attack (Carlini et al. 2021): the target's mean NLL relative to the text's zlib entropy."""
from __future__ import annotations

import zlib as _zlib

import numpy as np

from memlens.attacks.base import AttackInput, AttackResult, register
from memlens.attacks.loss import mean_logprob


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text."""
    return len(_zlib.compress(text.encode("utf-8")))


@register("zlib", description="-mean NLL / zlib-compressed length (MIMIR's form); higher = member.")
def zlib_attack(inp: AttackInput) -> AttackResult:
    return AttackResult(np.array([mean_logprob(s) / zlib_entropy(t) for s, t in zip(inp.target, inp.texts)]))
