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

from collections.abc import Sequence

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


class TokenStrings(Sequence):
    """Every text's :func:`token_strings`, made when asked for: a list-like of lists of strings
    (``AuditResult.token_strings``) that holds only the texts and the spans, not a Python string per
    token (5.5 M of them at 20,000 texts: seconds and hundreds of MB). The report asks for a few
    texts; token_scores.parquet gets whole groups through :meth:`arrow`, built from the texts' UTF-8
    bytes without any per-token Python object."""

    def __init__(self, texts, span_starts, span_ends):
        self.texts, self.starts, self.ends = list(texts), list(span_starts), list(span_ends)
        if not (len(self.texts) == len(self.starts) == len(self.ends)):
            raise ValueError(f"{len(self.texts)} texts but {len(self.starts)} span starts and {len(self.ends)} span ends")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return token_strings(self.texts[i], self.starts[i], self.ends[i])

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    def arrow(self, idx):
        """A pyarrow list<string> array, one row per text of ``idx``: the same strings as ``self[i]``."""
        import pyarrow as pa

        idx = list(idx)
        texts = [self.texts[i] for i in idx]
        begin, stop, counts = _pieces(texts, [self.starts[i] for i in idx], [self.ends[i] for i in idx])
        joined = "".join(texts)
        try:
            data = joined.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: pyarrow refuses the string the slow way too, with its own error
            return pa.array([self[i] for i in idx], pa.list_(pa.string()))
        if len(data) == len(joined):  # ASCII: a character is a byte
            byte_at = np.arange(len(joined) + 1, dtype=np.int64)
        else:
            cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
            width = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
            byte_at = np.concatenate([[0], np.cumsum(width)])
        b_begin, b_stop = byte_at[begin], byte_at[stop]
        # a text's pieces are contiguous (each begins where the one before stopped): its bytes from the first
        # piece's start to the last one's stop, one text after another, are the values buffer
        first = np.cumsum(counts) - counts
        has = counts > 0
        lo, hi = b_begin[first[has]], b_stop[(first + counts - 1)[has]]
        raw = np.frombuffer(data, dtype=np.uint8)
        values = np.concatenate([raw[a:b] for a, b in zip(lo.tolist(), hi.tolist())]) if has.any() else np.zeros(0, np.uint8)
        shift = np.zeros(len(texts), dtype=np.int64)
        shift[has] = lo - (np.cumsum(hi - lo) - (hi - lo))  # where each text's bytes start in the buffer
        offsets = np.concatenate([b_begin - np.repeat(shift, counts), [len(values)]]).astype(np.int32)
        strings = pa.StringArray.from_buffers(len(begin), pa.py_buffer(offsets.tobytes()), pa.py_buffer(values.tobytes()))
        list_offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        return pa.ListArray.from_arrays(list_offsets, strings)


def _pieces(texts: list[str], span_starts: list, span_ends: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each token's piece begins and stops in ``"".join(texts)`` (character positions), and the
    tokens per text: :func:`token_strings`' rule on all texts at once: the spans of all texts, shifted by each
    text's place in their concatenation, go through one running maximum (a text's clipped spans never reach
    below its own start, so the maximum restarts at each text by itself)."""
    starts_l, ends_l = [], []
    for a, b in zip(span_starts, span_ends):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"span_start and span_end must be 1-d of one length, got {a.shape} and {b.shape}")
        starts_l.append(a)
        ends_l.append(b)
    counts = np.fromiter((len(a) for a in starts_l), dtype=np.int64, count=len(texts))
    if not counts.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), counts
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
    return begin, stop, counts


def colour_scale(values) -> float | None:
    """The token view's colour scale of one token-level attack: the 99th percentile of |score| over
    every finite token score of every text (1.0 where that is 0), 3 decimals; None without scores.

    The report and ``memlens show`` colour by it; the audit saves it in results.json
    (``token_scales``) so that showing one text does not read every text's scores."""
    spread = token_spread(values)
    return None if spread is None else spread["scale"]


def token_spread(values) -> dict[str, float] | None:
    """:func:`colour_scale` (``scale``) and the 0.1% and 99.9% quantiles of the scores themselves (``lo``,
    ``hi``: the report's slider range) of one token-level attack, from one pass over every finite token
    score of every text; None without scores. The audit saves both in results.json (``token_scales``,
    ``token_ranges``) so that neither the report nor ``memlens show`` reads every text's scores again."""
    # float32 (the scores as saved) and the order statistics by partition in place: a few float32 copies of
    # every token, not numpy.quantile's float64 ones (at 15 M tokens 0.5 GB less); the same numbers
    allv = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in values] or [np.zeros(0, np.float32)])
    allv = allv[np.isfinite(allv)]
    if allv.size == 0:
        return None
    lo, hi = quantiles_linear(allv, [0.001, 0.999])
    (scale,) = quantiles_linear(np.abs(allv, out=allv), [0.99])
    return {"scale": round(scale or 1.0, 3), "lo": lo, "hi": hi}


def quantiles_linear(x: np.ndarray, qs) -> list[float]:
    """``numpy.quantile(x.astype(float64), qs)`` (linear interpolation, numpy's own formula), from the order
    statistics of ``x`` found by partitioning ``x`` in place (reordered, no copy)."""
    n = x.size
    vi = [q * (n - 1) for q in qs]
    below = [min(int(np.floor(v)), n - 1) for v in vi]
    ranks = sorted({r for b in below for r in (b, min(b + 1, n - 1))})
    x.partition(ranks)
    out = []
    for v, b in zip(vi, below):
        a, c, t = np.float64(x[b]), np.float64(x[min(b + 1, n - 1)]), np.float64(v - b)
        diff = c - a
        out.append(float(c - diff * (1 - t) if t >= 0.5 else a + diff * t))  # numpy's _lerp
    return out
