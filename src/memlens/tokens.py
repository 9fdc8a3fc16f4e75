"""Token strings from the character spans the statistics already hold (no tokenizer call).

``tokenizer.decode([id])`` one token at a time costs ~8 µs a token (45 s for 5.5 M tokens) and
shows a character that byte-level BPE split over several tokens as several U+FFFD. The spans
(``TokenStats.span_start`` / ``span_end``, the tokenizer's offset mapping) give the same strings
by slicing the text.

Rules, for spans in token order:
- a token shows the text from where the previous token's text ended to its own span end, so
  text the offsets leave out between two tokens (whitespace a tokenizer trimmed from a span, a
  character its normalizer dropped) is shown with the token after it, as byte-level BPE writes
  leading spaces; the first token starts at its own span start;
- text already shown is not shown again: the byte-level pieces of one character share its span,
  and the character is shown whole at the first piece, the others get "" (as the HTML report's
  token view and ``memlens show`` draw it);
- a token whose span is empty, or lies inside text already shown, gets "".
So ``"".join(token_strings(...)) == text[span_start[0]:max(span_end)]``.
"""
from __future__ import annotations

import numpy as np


def token_strings(text: str, span_start, span_end) -> list[str]:
    """The piece of ``text`` each token shows (module docstring); spans are clipped to the text."""
    starts = np.clip(np.asarray(span_start, dtype=np.int64), 0, len(text))
    ends = np.clip(np.asarray(span_end, dtype=np.int64), 0, len(text))
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError(f"span_start and span_end must be 1-d of one length, got {starts.shape} and {ends.shape}")
    if len(starts) == 0:
        return []
    stop = np.maximum.accumulate(np.maximum(ends, starts))  # where the text shown so far ends
    begin = np.r_[starts[0], stop[:-1]]
    return [text[a:b] for a, b in zip(begin.tolist(), stop.tolist())]


def token_strings_many(texts, span_starts, span_ends, group: int = 1024) -> list[list[str]]:
    """:func:`token_strings` of many texts at once, the same lists: the spans of all texts, shifted by
    each text's place in their concatenation, go through one running maximum (a text's clipped spans
    never reach below its own start, so the maximum restarts at each text by itself), and only the
    slicing is left per token. One call per text costs ~0.3 ms of numpy overhead; 20,000 texts, 6 s.
    Groups of ``group`` texts at a time, so the temporary arrays (and Python ints) stay small."""
    texts = list(texts)
    span_starts, span_ends = list(span_starts), list(span_ends)
    if not (len(texts) == len(span_starts) == len(span_ends)):
        raise ValueError(f"{len(texts)} texts but {len(span_starts)} span starts and {len(span_ends)} span ends")
    out: list[list[str]] = []
    for lo in range(0, len(texts), group):
        out += _token_strings_group(texts[lo:lo + group], span_starts[lo:lo + group], span_ends[lo:lo + group])
    return out


def _token_strings_group(texts: list[str], span_starts: list, span_ends: list) -> list[list[str]]:
    starts_l, ends_l = [], []
    for a, b in zip(span_starts, span_ends):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"span_start and span_end must be 1-d of one length, got {a.shape} and {b.shape}")
        starts_l.append(a)
        ends_l.append(b)
    if not texts:
        return []
    counts = np.fromiter((len(a) for a in starts_l), dtype=np.int64, count=len(texts))
    sizes = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.cumsum(sizes) - sizes
    size_of, offset_of = np.repeat(sizes, counts), np.repeat(offsets, counts)
    starts = np.clip(np.concatenate(starts_l), 0, size_of) + offset_of
    ends = np.clip(np.concatenate(ends_l), 0, size_of) + offset_of
    stop = np.maximum.accumulate(np.maximum(ends, starts))
    begin = np.empty_like(stop)
    begin[1:] = stop[:-1]
    first = (np.cumsum(counts) - counts)[counts > 0]  # each text's first token starts at its own span start
    begin[first] = starts[first]
    joined = "".join(texts)
    pieces = [joined[a:b] for a, b in zip(begin.tolist(), stop.tolist())]
    bounds = np.cumsum(counts).tolist()
    return [pieces[b - c:b] for b, c in zip(bounds, counts.tolist())]


def colour_scale(values) -> float | None:
    """The token view's colour scale of one token-level attack: the 99th percentile of |score| over
    every finite token score of every text (1.0 where that is 0), 3 decimals; None without scores.

    The report and ``memlens show`` colour by it; the audit saves it in results.json
    (``token_scales``) so that showing one text does not read every text's scores."""
    parts = [np.abs(np.asarray(v, dtype=np.float64)) for v in values]
    allv = np.concatenate(parts) if parts else np.zeros(0)
    allv = allv[np.isfinite(allv)]
    if allv.size == 0:
        return None
    return round(float(np.quantile(allv, 0.99)) or 1.0, 3)
