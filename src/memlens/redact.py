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


# --------------------------------------------------------------------------------------------
# Whole audits: what ``--redact`` and ``AuditResult.save(redact=True)`` write
# --------------------------------------------------------------------------------------------
def remap_offsets(offsets: Sequence[int], old: Sequence[dict], new: Sequence[dict]) -> np.ndarray:
    """Character offsets of the original text moved to the redacted text (``old`` merged spans,
    ``new`` their placeholders from :meth:`Redactor.text`). An offset at a secret's start goes to
    its placeholder's start, one inside or at its end to the placeholder's end; the map is monotone,
    so token spans stay ordered: the first token that touches a secret shows the whole placeholder
    and the secret's other tokens become empty (their scores stay, one per token)."""
    x = np.asarray(offsets, dtype=np.int64)
    out = x.copy()
    for o, n in zip(old, new):
        out[x >= o["end"]] += (n["end"] - n["start"]) - (o["end"] - o["start"])
    for o, n in zip(old, new):
        out[(x > o["start"]) & (x < o["end"])] = n["end"]
    return out


def _scrub(obj, values: Sequence[str], redactor: Redactor):
    """Any secret value inside other metadata strings (e.g. a profile record) replaced too."""
    if isinstance(obj, str):
        for v in values:
            if v in obj:
                obj = obj.replace(v, redactor.placeholder("secret", v))
        return obj
    if isinstance(obj, dict):
        return {k: _scrub(v, values, redactor) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, values, redactor) for v in obj]
    return obj


def token_attack_for(result, attack: str | None = None) -> str:
    """The token score that ``--redact-threshold`` compares with: ``attack``, else informia_token, else the first one."""
    have = list(getattr(result, "token_scores", {}) or {})
    if attack is not None:
        if attack not in have:
            raise RedactError(f"no token-level scores of {attack!r} in this audit (have: {', '.join(have) or 'none'})")
        return attack
    if not have:
        raise RedactError("redacting tokens above a threshold needs token-level scores (run informia_token or minkpp)")
    return "informia_token" if "informia_token" in have else have[0]


def redact_result(result, *, field: str = "pii", threshold: float | None = None, attack: str | None = None,
                  redactor: Redactor | None = None):
    """A copy of an :class:`~memlens.audit.AuditResult` with no secret value left in it.

    Secrets: each text's ``meta[field]`` spans, and with ``threshold`` every token whose ``attack``
    token score (default informia_token) is above it. They become typed placeholders with keyed
    hashes in the texts (and the span list), in the token strings and spans (remapped onto the new
    text, so the report's token view lines up), in other metadata strings, and in ids that contain
    one. The token ids of secret tokens become -1 (token ids decode back to the text). Scores,
    metrics and per-token numbers are kept as they are. results.json gets ``"redacted"``."""
    import dataclasses

    import pandas as pd

    from memlens.tokens import token_strings

    r = redactor or Redactor()
    tok_attack = token_attack_for(result, attack) if threshold is not None else None
    samples, stats, strings, id_map, values, n_spans = [], [], [], {}, set(), 0
    per_text = []
    for i, (s, st) in enumerate(zip(result.samples, result.target_stats)):
        spans = [sp for sp in (s.meta.get(field) or []) if isinstance(sp, dict)]
        if tok_attack is not None:
            spans += threshold_spans(st.span_start, st.span_end, result.token_scores[tok_attack][i], threshold)
        old = _merge(spans, len(s.text), f"text {s.id}") if spans else []
        values |= {s.text[o["start"]:o["end"]] for o in old}
        per_text.append(old)
    values_l = sorted((v for v in values if v.strip()), key=len, reverse=True)  # longest first: a name before its first name
    for s, st, old in zip(result.samples, result.target_stats, per_text):
        text, new = r.text(s.text, old, where=f"text {s.id}") if old else (s.text, [])
        n_spans += len(new)
        hit = np.zeros(len(st.span_start), dtype=bool)
        for o in old:
            hit |= (st.span_start < o["end"]) & (o["start"] < st.span_end)
        starts, ends = remap_offsets(st.span_start, old, new), remap_offsets(st.span_end, old, new)
        stats.append(dataclasses.replace(st, token_ids=np.where(hit, -1, st.token_ids), span_start=starts, span_end=ends))
        strings.append(token_strings(text, starts, ends))
        meta = {k: (v if k == field else _scrub(v, values_l, r)) for k, v in s.meta.items()}
        if old:
            meta[field] = new
        meta["redacted"] = True
        sid = s.id
        if any(v in sid for v in values_l):
            sid = id_map[s.id] = r.placeholder("id", s.id)
        samples.append(Sample(sid, text, s.label, meta))
    scores = result.scores.copy()
    if id_map:
        scores["id"] = scores["id"].map(lambda v: id_map.get(v, v))
    what = f"the texts' {field!r} spans" + (f" and tokens with {tok_attack} above {threshold:g}" if tok_attack else "")
    note = (f"redacted: {n_spans} secret spans ({what}) replaced by typed placeholders with keyed hashes (key not saved); "
            "token ids of secret tokens set to -1; every score kept")
    extra = dict(result.extra, redacted={"field": field, "threshold": threshold, "token_attack": tok_attack, "spans": n_spans})
    # token_store=None: the redacted copy writes its own token_scores.parquet (the store holds the secrets)
    return dataclasses.replace(result, samples=samples, scores=pd.DataFrame(scores), target_stats=stats, token_strings=strings,
                               notes=[*result.notes, note], extra=extra, token_store=None)


def redact_saved(saved, *, field: str = "pii", threshold: float | None = None, attack: str | None = None,
                 redactor: Redactor | None = None):
    """:func:`redact_result` for an audit read back from disk (``memlens report DIR --redact``):
    a copy of a :class:`memlens.report.SavedAudit` whose texts, spans, token spans, metadata and ids
    hold no secret value (the report is built from it; the files on disk are not changed)."""
    import dataclasses

    r = redactor or Redactor()
    tok_attack = None
    if threshold is not None:
        have = saved.token_attacks()
        if attack is not None and attack not in have or not have:
            raise RedactError(f"no token-level scores{f' of {attack!r}' if attack else ''} in this audit to redact above a threshold")
        tok_attack = attack or ("informia_token" if "informia_token" in have else have[0])
    rows = {tid: dict(saved.tokens[tid]) for tid in saved.tokens}
    old_by_id, values = {}, set()
    for tid, rec in saved.texts.items():
        text, meta, row = str(rec.get("text") or ""), rec.get("meta") if isinstance(rec.get("meta"), dict) else {}, rows.get(tid)
        spans = [sp for sp in (meta.get(field) or []) if isinstance(sp, dict)]
        if tok_attack and row is not None and row.get(f"{tok_attack}_token") is not None:
            spans += threshold_spans(row["span_start"], row["span_end"], row[f"{tok_attack}_token"], threshold)
        old_by_id[tid] = _merge(spans, len(text), f"text {tid}") if spans else []
        values |= {text[o["start"]:o["end"]] for o in old_by_id[tid]}
    values_l = sorted((v for v in values if v.strip()), key=len, reverse=True)
    id_map = {tid: r.placeholder("id", tid) for tid in list(saved.texts) + [str(x.get("id")) for x in saved.scores]
              if any(v in tid for v in values_l)}
    texts, n_spans = {}, 0
    for tid, rec in saved.texts.items():
        old, meta = old_by_id[tid], rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        text, new = r.text(str(rec.get("text") or ""), old, where=f"text {tid}") if old else (rec.get("text"), [])
        n_spans += len(new)
        meta = {k: (v if k == field else _scrub(v, values_l, r)) for k, v in meta.items()}
        if old:
            meta[field] = new
        row = rows.get(tid)
        if row is not None and old:
            row["span_start"], row["span_end"] = remap_offsets(row["span_start"], old, new), remap_offsets(row["span_end"], old, new)
        row and row.pop("tokens", None)  # the saved token strings hold the secrets; the page slices the (redacted) text
        nid = id_map.get(tid, tid)
        texts[nid] = {**rec, "id": nid, "text": text, "meta": {**meta, "redacted": True}}
    tokens = {id_map.get(t, t): row for t, row in rows.items()}
    scores = [{**x, "id": id_map.get(str(x.get("id")), x.get("id"))} for x in saved.scores]
    what = f"the texts' {field!r} spans" + (f" and tokens with {tok_attack} above {threshold:g}" if tok_attack else "")
    results = dict(saved.results, redacted={"field": field, "threshold": threshold, "token_attack": tok_attack, "spans": n_spans},
                   notes=[*(saved.results.get("notes") or []),
                          f"redacted: {n_spans} secret spans ({what}) replaced by typed placeholders with keyed hashes (key not saved)"])
    return dataclasses.replace(saved, results=results, scores=scores, texts=texts, tokens=tokens)
