"""When does a token count as *leaked*? A threshold calibrated on tokens known not to be memorized.

A fixed level (say 1 bit of token-level InfoRMIA) means nothing by itself: a model fine-tuned on
similar text scores many tokens of texts it never saw above it (names, numbers it happens to
predict better than the reference). The null here is the token scores of the non-members (texts
the model was not trained on): the leak threshold is the level that at most ``rate`` of those
tokens exceed (default 0.1%). With no non-members, the population texts' tokens serve (they are
not trained on either); with neither, there is nothing to calibrate on and the fixed level stays.

Per text, ``k`` tokens above the threshold out of ``n`` are then compared with what the null gives
a text of that length: ``n * rate`` tokens by chance, and the binomial tail ``P(X >= k)``; a text
is *leaking* when that tail is below ``rate`` too, so about ``rate`` of non-member texts are
flagged (more when a text's tokens are not independent: the README's demo measures it).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_NULL_RATE = 1e-3
FIXED_THRESHOLD = 1.0  # bits; used only when nothing is known not to be memorized


def null_threshold(null_tokens: Sequence[np.ndarray] | np.ndarray, rate: float = DEFAULT_NULL_RATE) -> float | None:
    """The smallest observed level that at most ``rate`` of the null tokens lie strictly above.

    With ``n`` finite tokens, ``floor(rate * n)`` may exceed it: sorted ascending, the value at
    position ``n - 1 - floor(rate * n)``. None when there is no finite token."""
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    parts = [np.asarray(t, dtype=np.float64).ravel() for t in null_tokens] if not isinstance(null_tokens, np.ndarray) \
        else [np.asarray(null_tokens, dtype=np.float64).ravel()]
    v = np.concatenate(parts) if parts else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    k = int(np.floor(rate * v.size))
    return float(np.partition(v, v.size - 1 - k)[v.size - 1 - k])


def leak_threshold(token_scores: Sequence[np.ndarray], labels: Sequence[int | None], *, attack: str, unit: str = "bits",
                   rate: float = DEFAULT_NULL_RATE, population_tokens: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """The calibrated threshold of one token-level attack, as saved in results.json (``leak_threshold``).

    ``source`` says which tokens made the null: "non-member tokens", "population tokens", or
    "fixed" (nothing to calibrate on: ``FIXED_THRESHOLD``, not a calibrated level)."""
    nulls = [t for t, y in zip(token_scores, labels) if y == 0]
    source = "non-member tokens"
    if not any(np.size(t) for t in nulls) and population_tokens is not None:
        nulls, source = list(population_tokens), "population tokens"
    value = null_threshold(nulls, rate) if nulls else None
    n = int(sum(np.isfinite(np.asarray(t, dtype=np.float64)).sum() for t in nulls)) if nulls else 0
    if value is None:
        return {"attack": attack, "unit": unit, "value": FIXED_THRESHOLD, "rate": None, "source": "fixed", "n_tokens": 0,
                "n_texts": 0}
    return {"attack": attack, "unit": unit, "value": value, "rate": rate, "source": source, "n_tokens": n, "n_texts": len(nulls)}


def text_leak(tokens: np.ndarray, threshold: float, rate: float | None) -> dict[str, Any]:
    """One text against the null: tokens above ``threshold`` and their total score, the bits above
    the threshold, the count a non-member text of this length has by chance (``rate * n``), the
    binomial tail of seeing this many, and whether that tail is below ``rate`` (``leaking``)."""
    from scipy.stats import binom

    v = np.asarray(tokens, dtype=np.float64)
    v = v[np.isfinite(v)]
    above = v[v > threshold]
    k, n = int(above.size), int(v.size)
    out: dict[str, Any] = {"n_tokens": n, "leaked_tokens": k, "leaked_total": float(above.sum()),
                           "above_threshold": float((above - threshold).sum())}
    if rate is None:  # a fixed threshold: no null to compare with
        return {**out, "expected_by_chance": None, "p_value": None, "leaking": None}
    p = float(binom.sf(k - 1, n, rate)) if k > 0 else 1.0
    return {**out, "expected_by_chance": rate * n, "p_value": p, "leaking": bool(p < rate)}
