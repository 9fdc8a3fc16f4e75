"""When does a token count as *leaked*, and when is a text *leaking*? Both calibrated on texts known not to be memorized.

A fixed level (say 1 bit of token-level InfoRMIA) means nothing by itself: a model fine-tuned on
similar text scores many tokens of texts it never saw above it (names, numbers it happens to
predict better than the reference). The null here is the token scores of the non-members (texts
the model was not trained on): the leak threshold is the level that at most ``rate`` of those
tokens exceed (default 0.1%). With no non-members, the population texts' tokens serve (they are
not trained on either); with neither, there is nothing to calibrate on and the fixed level stays.

Per text, ``k`` tokens above the threshold out of ``n`` are set beside what a text of that length
would show if its tokens were independent draws of the null: ``n * rate`` tokens, and the binomial
tail ``P(X >= k)``. That tail is only a length-adjusted score, not a p-value: the tokens of one text
are correlated (a text the model happens to predict well has several high tokens), so a tail below
``rate`` is reached by more than ``rate`` of non-member texts (2 of 48 on the quick demo). The flag
*leaking* is calibrated on the null texts themselves instead: a text leaks when at most
``text_rate`` (default 1%) of the null texts have a tail as small (ties broken by the bits above the
threshold): the conformal p-value ``(1 + m) / (N + 1)``, ``m`` of ``N`` null texts at least as
extreme, is at most ``text_rate``. A non-member text is judged against the other non-members only
(leave-one-out), so it is never part of its own null; then at most ``text_rate`` of the non-member
texts are flagged, whatever the dependence between tokens. ``N`` null texts resolve rates down to
``1 / (N + 1)``: a smaller ``text_rate`` is raised to that (said as such) up to
``MAX_TEXT_RATE``; with fewer null texts no text is flagged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_NULL_RATE = 1e-3
DEFAULT_TEXT_RATE = 0.01  # of null texts flagged as leaking
MAX_TEXT_RATE = 0.05  # a coarser flag is not worth showing: fewer than 19 null texts flag nothing
FIXED_THRESHOLD = 1.0  # bits; used only when nothing is known not to be memorized
# results.json keeps the most extreme null texts only (at least this many; always enough to decide every flag)
MAX_NULL_ROWS = 1000


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


def tail_statistic(tokens: np.ndarray, threshold: float, rate: float) -> tuple[int, int, float, float]:
    """``(k, n, s, b)`` of one text: ``k`` of its ``n`` finite tokens above ``threshold``, ``s`` =
    -log10 of the binomial tail P(X >= k), X ~ Binomial(n, rate) (0 when k = 0), ``b`` = the bits above
    the threshold. ``(s, b)`` in lexicographic order ranks texts from least to most extreme."""
    # the many-text version on one text: per text and vectorized give the same numbers by construction
    k, n, st, b = tail_statistics([tokens], threshold, rate)
    return int(k[0]), int(n[0]), float(st[0]), float(b[0])


def tail_statistics(token_scores: Sequence[np.ndarray], threshold: float, rate: float) -> tuple[np.ndarray, ...]:
    """:func:`tail_statistic` of many texts at once (arrays ``k, n, s, b``): one vectorized binomial tail
    call for all texts instead of one scipy call per text. ``s`` is floored at 0; where the binomial tail
    underflows, log P(X = k) <= log P(X >= k) stands in for it (finite)."""
    from scipy.stats import binom

    arrays = [np.asarray(t, dtype=np.float64).ravel() for t in token_scores]
    owner = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
    v = np.concatenate(arrays) if arrays else np.zeros(0)
    finite = np.isfinite(v)
    above = finite & (v > threshold)
    n = np.bincount(owner, weights=finite, minlength=len(arrays)).astype(np.int64)
    k = np.bincount(owner, weights=above, minlength=len(arrays)).astype(np.int64)
    # the bits above the threshold summed per text in index order, as the per-text sum adds them
    b = np.zeros(len(arrays), dtype=np.float64)
    np.add.at(b, owner[above], v[above] - threshold)
    s = np.zeros(len(arrays), dtype=np.float64)
    hit = k > 0
    if hit.any():
        log_tail = np.maximum(binom.logsf(k[hit] - 1, n[hit], rate), binom.logpmf(k[hit], n[hit], rate))
        s[hit] = np.maximum(-log_tail / np.log(10.0), 0.0)
    return k, n, s, b


def text_null(null_tokens: Sequence[np.ndarray], threshold: float, rate: float | None, *, source: str,
              ids: Sequence[str] | None = None, text_rate: float = DEFAULT_TEXT_RATE) -> dict[str, Any]:
    """The text-level null, as saved in results.json (``leak_threshold["text"]``): the tail statistic
    (:func:`tail_statistic`) of every null text with a token above ``threshold`` (``[id, s, b]``, most
    extreme first; the other null texts have ``(0, 0)``), their number ``n_texts``, and the rate
    ``rate`` of null texts a text must beat to be flagged (``text_rate``, raised to ``1 / (n_texts + 1)``
    when that is coarser, None with a ``reason`` when no text can be flagged)."""
    if not 0 < text_rate < 1:
        raise ValueError(f"text_rate must be in (0, 1), got {text_rate}")
    ids = [None] * len(null_tokens) if ids is None else list(ids)
    n = len(null_tokens)
    out: dict[str, Any] = {"source": source, "n_texts": n, "requested_rate": text_rate, "rate": None, "null": [],
                           "statistic": "binomial tail of the tokens above the threshold (length-adjusted), "
                                        "ties broken by the bits above it"}
    if rate is None or n == 0:
        return {**out, "reason": "no texts known not to be trained on: the threshold is a fixed level, not calibrated"}
    eff = max(text_rate, 1.0 / (n + 1))
    if eff > MAX_TEXT_RATE:
        return {**out, "reason": f"{n} {source} resolve no rate finer than {100 / (n + 1):.2g}% (at least "
                                 f"{int(np.ceil(1 / MAX_TEXT_RATE)) - 1} are needed to flag texts)"}
    k, _, st, b = tail_statistics(null_tokens, threshold, rate)
    rows = [[tid, float(st[i]), float(b[i])] for i, tid in enumerate(ids) if k[i]]
    rows.sort(key=lambda r: (r[1], r[2]), reverse=True)
    # a text is flagged only when fewer than eff * (n + 1) null texts are as extreme: the rows past that decide
    # nothing, and for a large audit would fill results.json; counts beyond the kept rows are said as "at least"
    keep = max(MAX_NULL_ROWS, int(np.floor(eff * (n + 1))) + 2)
    return {**out, "rate": eff, "n_above": len(rows), "null": rows[:keep]}


def null_rank(s: float, b: float, k: int, null: dict[str, Any], self_id: str | None = None) -> tuple[int, int, bool]:
    """``(m, N, exact)``: how many of the ``N`` null texts (less the text ``self_id`` itself when it is one of
    them: leave-one-out) are at least as extreme as a text with statistic ``(s, b)`` and ``k`` tokens above;
    ``exact`` False when ``m`` is only a lower bound (the text is less extreme than every null row kept)."""
    m, n, exact = null_ranks(np.array([k]), np.array([s], dtype=np.float64), np.array([b], dtype=np.float64), null, [self_id])
    return int(m[0]), int(n[0]), bool(exact[0])


def null_ranks(k: np.ndarray, s: np.ndarray, b: np.ndarray, null: dict[str, Any],
               self_ids: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`null_rank` of many texts at once (arrays ``m, N, exact``): every text against every kept null
    row in numpy, a chunk of texts at a time; ``self_ids[i]``: text i's id when it is a null text, else None."""
    rows = null["null"]
    rs = np.asarray([r[1] for r in rows], dtype=np.float64)
    rb = np.asarray([r[2] for r in rows], dtype=np.float64)
    row_of = {r[0]: j for j, r in enumerate(rows)}
    truncated = len(rows) < int(null.get("n_above", len(rows)))
    m = np.zeros(len(k), dtype=np.int64)
    for lo in range(0, len(k), 4096):  # texts x kept rows booleans, a chunk at a time
        s_, b_ = s[lo:lo + 4096, None], b[lo:lo + 4096, None]
        m[lo:lo + 4096] = ((rs[None, :] > s_) | ((rs[None, :] == s_) & (rb[None, :] >= b_))).sum(axis=1)
    loo = np.asarray([i is not None for i in self_ids], dtype=bool)
    n = np.full(len(k), int(null["n_texts"]), dtype=np.int64) - loo
    n_rows = np.full(len(k), len(rows), dtype=np.int64)
    for i in np.flatnonzero(loo):
        j = row_of.get(self_ids[i])
        if j is not None:  # its own kept row is left out, and no longer counted where it was
            n_rows[i] -= 1
            m[i] -= int(rs[j] > s[i] or (rs[j] == s[i] and rb[j] >= b[i]))
    none_above = np.asarray(k) == 0
    m[none_above] = n[none_above]  # every null text is at least as extreme as one with no token above
    exact = none_above | ~(truncated & (m == n_rows))
    return m, n, exact


def text_leak(tokens: np.ndarray, threshold: float, rate: float | None, null: dict[str, Any] | None = None,
              self_id: str | None = None) -> dict[str, Any]:
    """One text against the null: tokens above ``threshold`` and their total score, the bits above the
    threshold, the count a non-member text of this length has by chance (``rate * n``) and the binomial
    tail of seeing this many if tokens were independent (``tail``: a score, not a p-value).

    With the text-level null (:func:`text_null`): ``null_as_extreme`` of ``null_n`` null texts have a
    tail at least as small (``null_exact`` False: at least that many, and p_value at least that), ``p_value``
    = (1 + that) / (null_n + 1), and ``leaking`` = p_value <= the null's rate. ``self_id``: the text's id
    when it is itself a null text (a non-member), which is then left out of its own null. ``leaking`` is None without a calibrated null."""
    k, n, st, b = tail_statistic(tokens, threshold, rate) if rate is not None else (None, None, 0.0, 0.0)
    v = np.asarray(tokens, dtype=np.float64)
    v = v[np.isfinite(v)]
    above = v[v > threshold]
    out: dict[str, Any] = {"n_tokens": int(v.size), "leaked_tokens": int(above.size), "leaked_total": float(above.sum()),
                           "above_threshold": float((above - threshold).sum()), "expected_by_chance": None, "tail": None,
                           "p_value": None, "null_as_extreme": None, "null_n": None, "null_exact": None, "leaking": None}
    if rate is None:  # a fixed threshold: no null to compare with
        return out
    out.update(expected_by_chance=rate * n, tail=float(10.0 ** -st))
    if null is not None and null.get("rate") is not None:
        m, nn, exact = null_rank(st, b, k, null, self_id)
        p = (1 + m) / (nn + 1)
        out.update(null_as_extreme=m, null_n=nn, null_exact=exact, p_value=p, leaking=bool(p <= null["rate"]))
    return out


def flag_texts(token_scores: Sequence[np.ndarray], ids: Sequence[str], labels: Sequence[int | None], threshold: float,
               rate: float | None, null: dict[str, Any]) -> list[bool | None]:
    """``leaking`` of each text, as :func:`text_leak` says it (non-members left out of their own null when it is
    theirs), for all texts at once: one vectorized tail and a comparison with every kept null row in numpy."""
    if rate is None or null is None or null.get("rate") is None:
        return [None] * len(token_scores)
    own = null.get("source") == "non-member texts"
    k, _, st, b = tail_statistics(token_scores, threshold, rate)
    m, n, _ = null_ranks(k, st, b, null, [str(i) if own and y == 0 else None for i, y in zip(ids, labels)])
    return [bool(p <= null["rate"]) for p in ((1 + m) / (n + 1)).tolist()]


def calibrate(token_scores: Sequence[np.ndarray], labels: Sequence[int | None], ids: Sequence[str], *, attack: str,
              unit: str = "bits", population_tokens: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """results.json's ``leak_threshold`` of one token-level attack: the token level (:func:`leak_threshold`), its
    ``text`` entry (the text-level null, :func:`text_null`: the non-member texts, else the population's, else
    none) and in it how many texts of each label are flagged as leaking (:func:`flag_texts`)."""
    lt = leak_threshold(token_scores, labels, attack=attack, unit=unit, population_tokens=population_tokens)
    if lt["source"] == "non-member tokens":
        idx = [i for i, y in enumerate(labels) if y == 0]
        null = text_null([token_scores[i] for i in idx], lt["value"], lt["rate"], source="non-member texts",
                         ids=[ids[i] for i in idx])
    else:
        null = text_null(population_tokens or [], lt["value"], lt["rate"],
                         source="population texts" if lt["rate"] is not None else "none")
    flags = flag_texts(token_scores, ids, labels, lt["value"], lt["rate"], null)
    null["flagged"] = {name: [sum(1 for f, y in zip(flags, labels) if y == lab and f), sum(1 for y in labels if y == lab)]
                       for name, lab in (("members", 1), ("non-members", 0), ("unlabelled", None)) if lab in labels}
    return {**lt, "text": null}


def text_flag_words(null: dict[str, Any] | None) -> str | None:
    """The text-level flag in words (the CLI, the demo, ``memlens show`` and the report say it alike)."""
    if not isinstance(null, dict):
        return None
    if null.get("rate") is None:
        return f"texts are not flagged as leaking: {null.get('reason') or 'no calibrated null'}"
    rate = f"{null['rate'] * 100:.3g}%"
    asked = "" if null["rate"] <= null.get("requested_rate", null["rate"]) else \
        f" ({null['requested_rate'] * 100:.3g}% asked; {null['n_texts']} texts resolve no finer)"
    words = (f"a text is flagged as leaking when at most {rate} of the {null['n_texts']} {null['source']} have as many tokens "
             f"above the threshold for their length{asked}")
    if null["source"] == "non-member texts":
        words += ", each non-member judged against the others: so at most that share of non-members is flagged"
    flagged = null.get("flagged") or {}
    if flagged:
        words += "; flagged: " + ", ".join(f"{k} of {n} {name}" for name, (k, n) in flagged.items())
    return words
