"""Redaction of secret values for outputs that are shared (issue 16, item 3; library part).

Reports go to reviewers; they should show *where* a model leaks and how strongly, not the
secrets themselves. A :class:`Redactor` replaces each secret span (a record's PII spans, or every
token scored above a leak threshold) by a typed placeholder with a short keyed hash,
``[EMAIL#3f9a1c2e]``: the same value gets the same placeholder within one redaction (so a reader
can still see that two texts share a value) but the value cannot be recovered. The hash is an
HMAC with a random per-run key that is never written out: an unkeyed hash of a 9-digit SSN or a
phone number is reversed by trying every candidate. Scores are never touched: only texts, token
strings and span values change.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from memlens.data import Sample
from memlens.errors import RedactError  # noqa: F401  (raised here; defined with the other user errors)


def _merge(spans: Iterable[dict], n: int, where: str) -> list[dict]:
    """Spans sorted by start, overlapping or touching ones merged (the first one's type kept), bounds checked."""
    out: list[dict] = []
    for sp in sorted(({"type": str(s.get("type", "secret")), "start": int(s["start"]), "end": int(s["end"])} for s in spans),
                     key=lambda s: (s["start"], s["end"])):
        if not 0 <= sp["start"] < sp["end"] <= n:
            raise RedactError(f"{where}: span {sp['start']}-{sp['end']} is outside the text (length {n}) or empty")
        if out and sp["start"] <= out[-1]["end"]:  # touching spans too: one placeholder per run of leaked tokens
            out[-1]["end"] = max(out[-1]["end"], sp["end"])
        else:
            out.append(sp)
    return out


class Redactor:
    def __init__(self, key: bytes | None = None):
        # A fresh random key per run unless one is given (give one only to make placeholders
        # comparable across runs, and keep it secret).
        self._key = os.urandom(32) if key is None else key

    def placeholder(self, type_: str, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:8]
        return f"[{type_.upper()}#{digest}]"

    def text(self, text: str, spans: Iterable[dict], where: str = "text") -> tuple[str, list[dict]]:
        """``text`` with every span replaced by its placeholder, and the spans at their new
        positions (``value`` = the placeholder, so no secret survives in the span list either)."""
        parts, new, pos, shift = [], [], 0, 0
        for sp in _merge(spans, len(text), where):
            ph = self.placeholder(sp["type"], text[sp["start"]:sp["end"]])
            parts.append(text[pos:sp["start"]])
            start = sp["start"] + shift
            new.append({"type": sp["type"], "start": start, "end": start + len(ph), "value": ph})
            parts.append(ph)
            shift += len(ph) - (sp["end"] - sp["start"])
            pos = sp["end"]
        parts.append(text[pos:])
        return "".join(parts), new

    def tokens(self, text: str, tokens: Sequence[str], span_start: Sequence[int], span_end: Sequence[int],
               spans: Iterable[dict], where: str = "text") -> list[str]:
        """Token strings with every token that overlaps a secret span blanked: the first such
        token of a span shows the placeholder, the others "" (so per-token scores, which stay as
        they are, still line up one to one with tokens)."""
        merged = _merge(spans, len(text), where)
        out = list(tokens)
        done: set[int] = set()
        for i, (a, b) in enumerate(zip(span_start, span_end)):
            for k, sp in enumerate(merged):
                if a < sp["end"] and sp["start"] < b:  # the token's characters overlap the secret
                    out[i] = "" if k in done else self.placeholder(sp["type"], text[sp["start"]:sp["end"]])
                    done.add(k)
                    break
        return out

    def samples(self, samples: Sequence[Sample], field: str = "pii") -> list[Sample]:
        """Samples with their ``meta[field]`` spans redacted in the text and in the span list;
        ``meta["redacted"] = True``. Samples without spans are copied unchanged (but marked)."""
        out = []
        for s in samples:
            spans = s.meta.get(field) or []
            text, new = self.text(s.text, spans, where=f"text {s.id}") if spans else (s.text, [])
            meta = dict(s.meta, redacted=True)
            if spans:
                meta[field] = new
            out.append(Sample(s.id, text, s.label, meta))
        return out


def threshold_spans(span_start: Sequence[int], span_end: Sequence[int], token_scores: Sequence[float], threshold: float,
                    type_: str = "leak") -> list[dict]:
    """Character spans of the tokens scored above ``threshold`` (e.g. a token-level leak score),
    as spans for :meth:`Redactor.text` / :meth:`Redactor.tokens` (adjacent tokens merge there)."""
    scores = np.asarray(token_scores, dtype=np.float64)
    if not (len(span_start) == len(span_end) == len(scores)):
        raise RedactError(f"{len(span_start)} token starts, {len(span_end)} ends and {len(scores)} scores")
    return [{"type": type_, "start": int(a), "end": int(b)} for a, b, v in zip(span_start, span_end, scores) if v > threshold and b > a]


def leaked_values(root: str | os.PathLike, values: Iterable[str]) -> list[tuple[str, str]]:
    """(file, value) for every value found verbatim in any file under ``root`` (UTF-8 bytes, and
    the JSON-escaped form of non-ASCII values): the check that a redacted output holds no secret."""
    vals = [v for v in set(values) if v]
    forms = {v: {v.encode("utf-8"), v.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")} for v in vals}
    hits = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [(str(path), v) for v in vals if any(f in data for f in forms[v])]
    return hits
