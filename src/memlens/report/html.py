"""Build the report's data and render it with jinja2 into one self-contained, offline HTML file.

The page has no external resource at all: figures are PNG data URIs, styles and script are
inline, and a Content-Security-Policy allows nothing else (no network, no inline event
handlers; the one script is allowed by its hash). The audit's data travels as JSON inside a
``<script type="application/json">`` element, with ``<``, ``>``, ``&``, U+2028 and U+2029
written as ``\\u`` escapes so that no text can close the element; the page's script reads it with
``JSON.parse`` and inserts every piece of audited text with ``textContent``.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memlens.tokens import colour_scale, token_spread

PREFERRED_TOKEN_ATTACK = "informia_token"
KNOWN_UNITS = {"informia_token": "bits", "minkpp": "z"}
# token_scores.parquet columns that are not an attack's token scores (those are "<attack>_token")
TOKEN_BASE_COLUMNS = frozenset({"id", "label", "token_ids", "tokens", "span_start", "span_end", "target_logprob", "reference_logprob"})
DEFAULT_THRESHOLD = 1.0
TOKEN_DIGITS = 3  # decimals kept for per-token numbers in the page (size: ~6 bytes a number)
SCORE_DIGITS = 4
MAX_STUDY_ROWS = 50
# Texts whose token-level data the page carries (every text keeps its scores). ~6 KB a text of 200
# tokens: 200 texts keep the page small and quick at any audit size; ``memlens show`` has the rest.
DEFAULT_REPORT_TEXTS = 200
# Shares of the selection: the most member-like texts, the largest leaks, a sample of non-members.
SELECTION_SHARES = {"member-like": 0.4, "leak": 0.4, "non-member sample": 0.2}


@dataclass
class SavedAudit:
    """An audit in the shape the report needs, read from disk or taken from an AuditResult."""

    results: dict[str, Any]  # results.json
    scores: list[dict[str, Any]]  # rows of scores.csv
    texts: dict[str, dict[str, Any]]  # id -> {text, label, meta}
    tokens: Mapping[str, dict[str, Any]]  # id -> the columns of its token_scores.parquet row (TokenFileRows when read from disk)
    notes: list[str] = field(default_factory=list)  # what was missing or rebuilt while loading

    @classmethod
    def from_result(cls, result) -> SavedAudit:
        """The same data as ``result.save()`` then :func:`load_saved` would give, without the disk."""
        from memlens.audit import json_default

        results = json.loads(json.dumps(result.results_dict(), default=json_default))
        scores = result.scores.to_dict("records")
        for row in scores:
            row["id"] = str(row["id"])
        texts = {str(s.id): {"id": str(s.id), "text": s.text, "label": s.label, "meta": s.meta} for s in result.samples}
        if getattr(result, "token_store", None) is not None:  # attacks run in chunks: the rows are on disk already
            # the numeric columns only, as the rows made below: no token strings (the page slices the text) or ids
            return cls(results, scores, texts, TokenFileRows(result.token_store.path, skip=("tokens",)))
        tokens: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(result.samples):
            st = result.target_stats[i]
            # no token strings: the page slices the text by the spans, and load_saved's rows have none either
            # (making them for every text cost ~2 s at 20,000 texts)
            row = {"span_start": st.span_start, "span_end": st.span_end,
                   "target_logprob": np.asarray(st.logprob, dtype=np.float32)}
            if result.reference_logprobs is not None:  # float32 as saved, so both paths give the same page
                row["reference_logprob"] = np.asarray(result.reference_logprobs[i], dtype=np.float32)
            for attack, toks in result.token_scores.items():
                row[f"{attack}_token"] = np.asarray(toks[i], dtype=np.float32)
            tokens[str(s.id)] = row
        return cls(results, scores, texts, tokens)

    def token_attacks(self) -> list[str]:
        """Attacks with token-level scores: informia_token first, then in the audit's order."""
        cols: list[str] = []
        for row in self.tokens.values():
            cols = [c for c in row if c.endswith("_token") and c not in TOKEN_BASE_COLUMNS]
            break
        names = [c[: -len("_token")] for c in cols]
        order = list((self.results.get("settings") or {}).get("attacks") or [])
        return sorted(names, key=lambda a: (a != PREFERRED_TOKEN_ATTACK, order.index(a) if a in order else len(order), a))


class TokenRows(Mapping):
    """id -> the numeric columns of one text's token_scores.parquet row, read on demand (a Mapping).

    Each list column's values and offsets become one numpy array each, once; a row is a set of
    slices of them. Turning every row into Python lists (``to_pylist``) took minutes and GBs at
    100,000 texts, and the report needs most rows' token data only for its selection."""

    def __init__(self, table):
        self._take(table.column_names, table.column)

    def _take(self, column_names, column) -> None:
        names = [n for n in column_names if n not in ("id", "label", "token_ids")]
        self._index = {str(x): i for i, x in enumerate(column("id").to_pylist())}
        self._num: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._str: dict[str, Any] = {}
        for n in names:
            col = column(n).combine_chunks()
            if n == "tokens":
                self._str[n] = col  # strings: sliced per row, never all converted
            else:
                self._num[n] = (col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False))
                if col.null_count:  # a null row (no data for that text) reads as None
                    self._num[n] = (*self._num[n], col.is_null().to_numpy(zero_copy_only=False))

    def __getitem__(self, tid: str) -> dict[str, Any]:
        i = self._index[tid]
        row: dict[str, Any] = {}
        for n, (off, vals, *null) in self._num.items():
            row[n] = None if null and null[0][i] else vals[off[i]:off[i + 1]]
        return row

    def token_strings(self, tid: str) -> list[str] | None:
        """The saved token strings of one text (not in the rows: no page needs them, and they are slow to read)."""
        col = self._str.get("tokens")
        return None if col is None else col[self._index[tid]].as_py()

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)



class TokenFileRows(Mapping):
    """id -> the numeric columns of one text's row of a token_scores.parquet file, read from its row group
    when asked for (the last few groups kept); :meth:`column` reads one column of every text. Memory: the
    ids and a few row groups, whatever the file's size (:class:`TokenRows` holds every column). Rows in
    the file's order are read a group at a time; the report asks for a few texts' rows and one column."""

    GROUPS_KEPT = 8

    def __init__(self, path: str | os.PathLike, skip: Sequence[str] = ()):
        import pyarrow.parquet as pq

        from memlens.token_file import RowGroups

        self._names = [n for n in pq.read_schema(path).names if n not in ("id", "label", "token_ids", *skip)]
        self._rows = RowGroups(path, columns=self._names, keep=self.GROUPS_KEPT, convert=self._group_rows)
        self._pf = self._rows.file
        self._index = {str(x): i for i, x in enumerate(self._pf.read(columns=["id"]).column(0).to_pylist())}

    def _group_rows(self, table) -> TokenRows:
        """One row group as TokenRows keyed by the row's place in the group."""
        rows = TokenRows.__new__(TokenRows)
        rows._take(["id", *self._names], lambda n: table.column(n) if n != "id" else _row_ids(table.num_rows))
        return rows

    def _group(self, i: int) -> tuple[TokenRows, int]:
        return self._rows.row(i)

    def __getitem__(self, tid: str) -> dict[str, Any]:
        rows, j = self._group(self._index[tid])
        return rows[str(j)]

    def token_strings(self, tid: str) -> list[str] | None:
        rows, j = self._group(self._index[tid])
        return rows.token_strings(str(j))

    def column(self, name: str) -> dict[str, np.ndarray | None]:
        """id -> that text's array of one list column (views of one buffer; None for a null row)."""
        if name not in self._names:
            return {}
        col = self._pf.read(columns=[name]).column(0).combine_chunks()
        off, vals = col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False)
        null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
        return {tid: None if null is not None and null[i] else vals[off[i]:off[i + 1]] for tid, i in self._index.items()}

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _row_ids(n: int):
    import pyarrow as pa

    return pa.array([str(j) for j in range(n)], pa.string())


def token_column(tokens: Mapping[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """id -> one column's array of every text's token row: one read of that column where the rows come from a
    file (:meth:`TokenFileRows.column`), else from the rows."""
    if isinstance(tokens, TokenFileRows):
        return tokens.column(name)
    return {tid: (row or {}).get(name) for tid, row in tokens.items()}

def load_saved(results_dir: str | os.PathLike) -> SavedAudit:
    """Read an audit's output directory: results.json and scores.csv (required), texts.jsonl and
    token_scores.parquet (optional: without texts.jsonl the texts are rebuilt from the token
    strings and there is no ground-truth PII; without the parquet there is no token view).

    Damaged or inconsistent files are refused with one line (:func:`_check_saved`), never read into
    a partial report: files that do not match manifest.json, a truncated scores.csv, ids missing
    from texts.jsonl or the parquet, an attack of results.json without its column."""
    import pandas as pd

    from memlens.data import DataError, spreadsheet_unescape

    d = _checked_output_dir(results_dir)
    try:
        results = json.loads((d / "results.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{d / 'results.json'} is not valid JSON: {e}") from None
    if not isinstance(results, dict):
        raise DataError(f"{d / 'results.json'} is not an audit's results (not a JSON object)")
    raw = (d / "scores.csv").read_bytes()
    if raw and not raw.endswith(b"\n"):  # pandas ends every row with a newline: a missing one is a cut file
        raise DataError(f"{d / 'scores.csv'} is truncated (its last line is incomplete); rerun the audit")
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype={"id": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"{d / 'scores.csv'} cannot be read: {why}") from None
    scores = frame.to_dict("records")
    for row in scores:  # AuditResult.save quoted string cells for spreadsheets (CSV injection)
        for k, v in row.items():
            row[k] = spreadsheet_unescape(v)
    notes: list[str] = []
    tokens: Mapping[str, dict[str, Any]] = {}
    if (d / "token_scores.parquet").is_file():
        import pyarrow as pa

        try:
            tokens = TokenFileRows(d / "token_scores.parquet")
        except (pa.ArrowException, OSError, KeyError) as e:
            raise DataError(f"{d / 'token_scores.parquet'} cannot be read ({type(e).__name__}: {e}); rerun the audit") from None
    else:
        notes.append("token_scores.parquet is missing: no token view")
    texts: dict[str, dict[str, Any]] = {}
    if (d / "texts.jsonl").is_file():
        with open(d / "texts.jsonl", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{d / 'texts.jsonl'} line {n}: {e}") from None
                texts[str(rec.get("id"))] = rec
    elif tokens:
        notes.append("texts.jsonl is missing: texts were rebuilt from the token strings, and there is no ground-truth PII")
        tokens = {tid: {**row, "tokens": tokens.token_strings(tid)} for tid, row in tokens.items()}  # rows are rewritten below
        for tid, tok in tokens.items():
            pieces = [str(p) for p in (tok.get("tokens") or [])]
            ends = np.cumsum([len(p) for p in pieces]).astype(np.int64)
            tok["span_start"], tok["span_end"] = ends - np.array([len(p) for p in pieces], dtype=np.int64), ends
            texts[tid] = {"id": tid, "text": "".join(pieces), "meta": {}}
    else:
        notes.append("texts.jsonl is missing: the texts are not shown")
    _check_saved(d, results, list(frame.columns), scores, texts if (d / "texts.jsonl").is_file() else None, tokens)
    return SavedAudit(results, scores, texts, tokens, notes)


def _check_saved(d: Path, results: dict, columns: list[str], scores: list[dict], texts: Mapping | None, tokens: Mapping) -> None:
    """The saved files describe one audit: one line naming the first disagreement."""
    from memlens.data import DataError

    hint = "the files are not from one audit; rerun it"
    if "id" not in columns:
        raise DataError(f"{d / 'scores.csv'} has no id column: {hint}")
    n = results.get("n_texts")
    if isinstance(n, int) and n != len(scores):
        raise DataError(f"{d / 'scores.csv'} has {len(scores)} texts but results.json says {n}: {hint}")
    ids = [str(r["id"]) for r in scores]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise DataError(f"{d / 'scores.csv'} has the id {i!r} twice: {hint}")
        seen.add(i)
    attacks = list(results.get("metrics") or {}) + list((results.get("settings") or {}).get("attacks") or [])
    lost = [a for a in dict.fromkeys(attacks) if a not in columns]
    if lost:
        raise DataError(f"results.json has the attack {lost[0]!r} but {d / 'scores.csv'} has no column for it: {hint}")
    for name, have in (("texts.jsonl", texts), ("token_scores.parquet", tokens or None)):
        if have is None:
            continue
        absent = [i for i in ids if i not in have]
        if absent:
            raise DataError(f"{d / name} lacks {len(absent)} of the {len(ids)} texts of scores.csv (e.g. id {absent[0]!r}): {hint}")


def load_one(results_dir: str | os.PathLike, text_id: str) -> SavedAudit:
    """:func:`load_saved` for one text (``memlens show``): results.json, that text's scores.csv row,
    its texts.jsonl record and its token_scores.parquet row, which is found through the id column
    and read from its row group only, so showing a text costs about the same at any audit size.

    Raises DataError when there is no such text. Without texts.jsonl it falls back to
    :func:`load_saved` (the text is then rebuilt from its token strings)."""
    import pandas as pd
    import pyarrow.compute as pc

    from memlens.data import DataError, spreadsheet_unescape
    from memlens.token_file import RowGroups

    d = Path(results_dir)
    tid = str(text_id)
    if not (d / "texts.jsonl").is_file():
        full = load_saved(d)
        rows = [r for r in full.scores if str(r["id"]) == tid]
        if not rows:
            raise DataError(f"no text with id {tid!r} in {d}")
        return SavedAudit(full.results, rows, full.texts, full.tokens, full.notes)
    full = load_saved_meta(d)
    scores = pd.read_csv(d / "scores.csv", dtype={"id": str}, keep_default_na=True)
    hit = scores[scores["id"].map(spreadsheet_unescape) == tid]
    if hit.empty:
        raise DataError(f"no text with id {tid!r} in {d}")
    row = {k: spreadsheet_unescape(v) for k, v in hit.iloc[0].to_dict().items()}
    texts = {}
    keys = {json.dumps(tid), json.dumps(tid, ensure_ascii=False)}  # how json.dumps may have written the id
    with open(d / "texts.jsonl", encoding="utf-8") as f:
        for line in f:
            if any(k in line for k in keys):
                rec = json.loads(line)
                if str(rec.get("id")) == tid:
                    texts[tid] = rec
                    break
    tokens: Mapping[str, dict[str, Any]] = {}
    notes = list(full.notes)
    path = d / "token_scores.parquet"
    if path.is_file():
        rows = RowGroups(path)
        where = pc.index(rows.file.read(columns=["id"]).column("id"), tid).as_py()
        if where >= 0:
            table, j = rows.row(where)
            tokens = TokenRows(table.slice(j, 1))
    else:
        notes.append("token_scores.parquet is missing: no token view")
    return SavedAudit(full.results, [row], texts, tokens, notes)


def _checked_output_dir(results_dir: str | os.PathLike) -> Path:
    """An audit's output directory, refused in one line when it is not one (no results.json or
    scores.csv) or when its files do not match its manifest (memlens.outputs.verify_set)."""
    from memlens.data import DataError
    from memlens.outputs import verify_set

    d = Path(results_dir)
    if not d.is_dir():
        raise DataError(f"{d} is not a directory")
    missing = [f for f in ("results.json", "scores.csv") if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} is not an audit output directory: it lacks {', '.join(missing)}")
    verify_set(d)
    return d


def load_saved_meta(results_dir: str | os.PathLike) -> SavedAudit:
    """results.json alone (checked as :func:`load_saved` checks it), as a SavedAudit without texts."""
    from memlens.data import DataError

    d = _checked_output_dir(results_dir)  # `memlens show` reads one text, but never from a set that is not one run's
    try:
        results = json.loads((d / "results.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{d / 'results.json'} is not valid JSON: {e}") from None
    return SavedAudit(results, [], {}, {}, [])


def saved_colour_scale(results_dir: str | os.PathLike, results: dict[str, Any], attack: str) -> float:
    """The colour scale of ``attack``'s token scores: as the audit saved it in results.json
    (``token_scales``), else (an older output directory) from that one column of every text."""
    saved = (results.get("token_scales") or {}).get(attack) if isinstance(results.get("token_scales"), dict) else None
    if isinstance(saved, (int, float)):
        return float(saved)
    import pyarrow.parquet as pq

    col = pq.read_table(Path(results_dir) / "token_scores.parquet", columns=[f"{attack}_token"]).column(0).combine_chunks()
    return float(colour_scale([col.values.to_numpy(zero_copy_only=False)]) or 4.0)


# ---------------------------------------------------------------------------------------------
# payload


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _label(v: Any) -> int | None:
    f = _finite(v)
    return None if f is None else int(f)


def _tier(v: Any) -> int | str | None:
    if v is None or v == "":
        return None
    f = _finite(v)
    if f is not None:
        return int(f) if f == int(f) else f
    if isinstance(v, float) or str(v) in ("nan", "NaN", "<NA>", "None"):  # NaN, pandas NA
        return None
    return str(v)


def _round_list(a: Any, digits: int) -> list:
    if a is None:
        return []
    arr = np.asarray(a, dtype=np.float64).ravel()
    out = np.round(arr, digits).tolist()
    if not np.isfinite(arr).all():
        out = [v if math.isfinite(v) else None for v in out]
    return out


def _clean(o: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, numpy scalars and arrays become Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return _finite(o)
    if o is None or isinstance(o, str):
        return o
    return str(o)


def _pii_spans(meta: Any) -> list[dict[str, Any]]:
    """The ground-truth PII spans of a text's meta (a list of {type, start, end}, or its JSON)."""
    spans = (meta or {}).get("pii") if isinstance(meta, dict) else None
    if isinstance(spans, str):
        try:
            spans = json.loads(spans)
        except ValueError:
            return []
    out = []
    for sp in spans if isinstance(spans, (list, tuple, np.ndarray)) else []:
        if not isinstance(sp, dict):
            continue
        a, b = _finite(sp.get("start")), _finite(sp.get("end"))
        if a is None or b is None or b <= a:
            continue
        out.append({"type": str(sp.get("type") or "pii"), "start": int(a), "end": int(b)})
    return out


def _pii_index(spans: list[dict[str, Any]], starts: np.ndarray, ends: np.ndarray, types: list[str]) -> list[int]:
    """Per token, the index (in ``types``) of the ground-truth PII type its span overlaps, else -1."""
    out = np.full(len(starts), -1, dtype=np.int64)
    for sp in spans:
        if sp["type"] not in types:
            types.append(sp["type"])
        hit = (starts < sp["end"]) & (ends > sp["start"]) & (out < 0)
        out[hit] = types.index(sp["type"])
    return out.tolist()


def _saved_spread(res: dict[str, Any], attack: str) -> dict[str, float] | None:
    """The audit's saved spread of ``attack``'s token scores (results.json ``token_scales`` and
    ``token_ranges``); None for an output directory written before they were saved."""
    scales, ranges = res.get("token_scales"), res.get("token_ranges")
    if not isinstance(scales, dict) or not isinstance(ranges, dict):
        return None
    scale, rng = scales.get(attack), ranges.get(attack)
    if not isinstance(scale, (int, float)) or not (isinstance(rng, list) and len(rng) == 2 and all(_finite(x) is not None for x in rng)):
        return None
    return {"scale": float(scale), "lo": float(rng[0]), "hi": float(rng[1])}


def _slider(values: list[np.ndarray] | None, threshold: float, saved: dict[str, float] | None = None) -> dict[str, float]:
    """Slider range, step and colour scale of one token attack, from its scores' spread: ``saved`` (the
    audit's :func:`memlens.tokens.token_spread`, from results.json), else computed from ``values``."""
    spread = saved if saved is not None else token_spread(values or [])
    if spread is None:
        return {"min": -2.0, "max": 10.0, "step": 0.1, "scale": 4.0}
    lo, hi = spread["lo"], spread["hi"]
    lo = math.floor(min(lo, 0.0, threshold - 1))
    hi = math.ceil(max(hi, threshold + 1, lo + 1))
    span = hi - lo
    step = 0.01 if span <= 4 else 0.05 if span <= 20 else 0.1 if span <= 40 else 0.5
    return {"min": float(lo), "max": float(hi), "step": step, "scale": spread["scale"]}


def _text_record(tid: str, row: dict[str, Any], saved: SavedAudit, score_cols: Sequence[str], token_attacks: Sequence[str],
                 pii_types: list[str], arrays: dict[str, list[np.ndarray]] | None = None) -> dict[str, Any]:
    trec = saved.texts.get(tid) or {}
    tok = saved.tokens.get(tid) or {}
    text = trec.get("text")
    text = "" if text is None else str(text)
    starts = np.asarray(tok.get("span_start") if tok.get("span_start") is not None else [], dtype=np.int64)
    ends = np.asarray(tok.get("span_end") if tok.get("span_end") is not None else [], dtype=np.int64)
    if starts.shape != ends.shape:
        starts = ends = np.zeros(0, dtype=np.int64)
    label = _label(row.get("label", trec.get("label")))
    meta = trec.get("meta") if isinstance(trec.get("meta"), dict) else {}
    tier = _tier(row["tier"]) if "tier" in row else _tier(meta.get("tier"))
    s = {}
    for a in token_attacks:
        v = tok.get(f"{a}_token")
        if v is not None:
            arr = np.asarray(v, dtype=np.float64)
            s[a] = _round_list(arr, TOKEN_DIGITS)
            if arrays is not None:
                arrays[a].append(arr)
    lp_r = tok.get("reference_logprob")
    lk = calibrated_leak(saved, tid, label, (saved.results.get("leak_threshold") or {}).get("attack"))
    return {
        "id": tid, "label": label, "tier": tier,
        # the text-level flag at the calibrated level: m of the n null texts have as many tokens above it for their length
        "flag": None if lk is None or lk["leaking"] is None else {"leaking": lk["leaking"], "m": lk["null_as_extreme"],
                                                                  "n": lk["null_n"], "exact": lk["null_exact"]},
        "scores": {a: (None if _finite(row.get(a)) is None else round(float(row[a]), SCORE_DIGITS)) for a in score_cols},
        "text": text, "start": starts.tolist(), "end": ends.tolist(),
        "lp_t": _round_list(tok.get("target_logprob"), TOKEN_DIGITS),
        "lp_r": None if lp_r is None else _round_list(lp_r, TOKEN_DIGITS),
        "s": s, "pii": _pii_index(_pii_spans(meta), starts, ends, pii_types),
    }


def _fpr_keys(res: dict[str, Any]) -> list[str]:
    from memlens.metrics import DEFAULT_FPRS, fpr_label

    keys = [fpr_label(float(f)) for f in ((res.get("settings") or {}).get("fprs") or DEFAULT_FPRS)]
    for m in (res.get("metrics") or {}).values():
        for k in (m.get("tpr_at_fpr") or {}):
            if k not in keys:
                keys.append(k)
    return keys


def _metrics(res: dict[str, Any], fpr_keys: list[str]) -> list[dict[str, Any]]:
    """Rows of the metrics table; an interval not made by the bootstrap carries its method (a † in the page)."""
    from memlens.metrics import CI_BOOTSTRAP

    out = []
    for name, m in (res.get("metrics") or {}).items():
        tpr = m.get("tpr_at_fpr") or {}
        tpr_ci = m.get("tpr_at_fpr_ci95") or {}
        notes = [str(n) for n in m.get("notes") or []]
        cells = []
        for k in fpr_keys:
            v = _finite(tpr.get(k))
            ci = tpr_ci.get(k)
            why = next((n for n in notes if n.startswith(f"TPR at {k} FPR")),
                       f"TPR at {k} FPR not reported: too few non-members to resolve it")
            how = ((m.get("ci_method") or {}).get("tpr_at_fpr") or {}).get(k)
            cells.append({"fpr": k, "value": v, "ci": [_finite(c) for c in ci] if ci else None, "why": None if v is not None else why,
                          "ci_method": how if how and how != CI_BOOTSTRAP else None})
        ci = m.get("auc_ci95")
        how = (m.get("ci_method") or {}).get("auc")
        out.append({"attack": str(name), "auc": _finite(m.get("auc")), "auc_ci": [_finite(c) for c in ci] if ci else None,
                    "auc_ci_method": how if how and how != CI_BOOTSTRAP else None,
                    "tpr": cells, "n_members": m.get("n_members"), "n_nonmembers": m.get("n_nonmembers"), "notes": notes})
    return out


def _blind(res: dict[str, Any], fpr_keys: list[str]) -> dict[str, Any] | None:
    """The blind baseline (memlens.blind) as a metrics row plus its verdict and warning, for the banner."""
    b = res.get("blind")
    if not isinstance(b, dict) or not isinstance(b.get("metrics"), dict):
        return None
    row = _metrics({"metrics": {"blind (model-free)": b["metrics"]}}, fpr_keys)[0]
    verdict = str(b.get("verdict") or "ok")
    return {"row": row, "verdict": verdict, "warning": None if verdict == "ok" else str(b.get("warning") or ""),
            "folds": b.get("folds")}


def _studies(res: dict[str, Any]) -> dict[str, Any]:
    """Further studies saved in results.json (the demo's per-tier metrics, verbatim extraction and token localization)."""
    demo = res.get("demo") if isinstance(res.get("demo"), dict) else {}
    out: dict[str, Any] = {}
    per_tier = demo.get("per_tier")
    if isinstance(per_tier, dict) and per_tier:
        attacks: list[str] = []
        for row in per_tier.values():
            for a in (row or {}):
                if a not in attacks:
                    attacks.append(a)
        out["per_tier"] = {"attacks": attacks, "rows": [
            {"tier": str(t), "auc": [_finite(((row or {}).get(a) or {}).get("auc")) for a in attacks],
             "n_members": next((((row or {}).get(a) or {}).get("n_members") for a in attacks if (row or {}).get(a)), None)}
            for t, row in list(per_tier.items())[:MAX_STUDY_ROWS]]}
    ex = demo.get("extraction")
    if isinstance(ex, dict) and isinstance(ex.get("by_tier"), dict) and ex["by_tier"]:
        out["extraction"] = {
            "rows": [{"group": "non-members" if str(k) == "nonmember" else f"members {k}x", "n": (v or {}).get("n"),
                      "exact": _finite((v or {}).get("exact")), "fuzzy": _finite((v or {}).get("fuzzy"))}
                     for k, v in list(ex["by_tier"].items())[:MAX_STUDY_ROWS] if isinstance(v, dict)],
            "types": [str(t) for t in ex.get("pii_types") or []], "fuzzy_threshold": _finite(ex.get("fuzzy_threshold"))}
    loc = demo.get("localization")
    if isinstance(loc, dict) and loc:
        out["localization"] = [{"scorer": str(k), "auc": _finite((v or {}).get("auc")), "topk": _finite((v or {}).get("topk_precision")),
                                "n_texts": (v or {}).get("n_texts"), "n_secret": (v or {}).get("n_secret_tokens")}
                               for k, v in list(loc.items())[:MAX_STUDY_ROWS] if isinstance(v, dict)]
    exp = res.get("canary_exposure") if isinstance(res.get("canary_exposure"), dict) else {}
    by_rep = exp.get("by_repetition")
    if isinstance(by_rep, dict) and by_rep:  # memlens audit --canaries (memlens.canary.ExposureResult.to_dict)
        out["exposure"] = [{"repetitions": "held out" if str(r) == "0" else str(r), "n": (row or {}).get("n"),
                            "mean": _finite((row or {}).get("mean")), "min": _finite((row or {}).get("min")),
                            "max": _finite((row or {}).get("max"))} for r, row in list(by_rep.items())[:MAX_STUDY_ROWS]]
    return out


def _leak(res: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration behind the default threshold, for the page's label (None when not saved)."""
    lt = res.get("leak_threshold")
    if not isinstance(lt, dict) or _finite(lt.get("value")) is None:
        return None
    from memlens.leakage import text_flag_words

    return {"attack": str(lt.get("attack")), "value": default_threshold(res), "rate": _finite(lt.get("rate")),
            "source": str(lt.get("source") or ""), "n_tokens": lt.get("n_tokens"), "text_flag": text_flag_words(lt.get("text")),
            "text_source": str((lt.get("text") or {}).get("source") or ""), "text_rate": _finite((lt.get("text") or {}).get("rate"))}


def calibrated_leak(saved: SavedAudit, tid: str, label: int | None, attack: str | None) -> dict[str, Any] | None:
    """One text against the audit's null (memlens.leakage.text_leak) at the calibrated level itself (not the
    page's rounded one), from the text's saved token scores; None when ``attack`` is not the calibrated one."""
    from memlens.leakage import text_leak

    lt = saved.results.get("leak_threshold")
    if not isinstance(lt, dict) or attack is None or lt.get("attack") != attack or _finite(lt.get("value")) is None:
        return None
    v = (saved.tokens.get(tid) or {}).get(f"{attack}_token")
    if v is None:
        return None
    null = lt.get("text") if isinstance(lt.get("text"), dict) else None
    own = null is not None and null.get("source") == "non-member texts" and label == 0
    return text_leak(np.asarray([np.nan if x is None else x for x in v], dtype=np.float64), float(lt["value"]),
                     _finite(lt.get("rate")), null, tid if own else None)


def _best_attack(res: dict[str, Any], score_cols: Sequence[str]) -> str | None:
    """The attack with the highest AUC (else the report's default attack): it ranks texts as member-like."""
    aucs = {a: _finite((m or {}).get("auc")) for a, m in (res.get("metrics") or {}).items() if a in score_cols}
    aucs = {a: v for a, v in aucs.items() if v is not None}
    if aucs:
        return max(aucs, key=lambda a: aucs[a])
    return next((a for a in ("informia", "informia_token", "rmia") if a in score_cols), score_cols[0] if score_cols else None)


def select_token_texts(saved: SavedAudit, rows: Sequence[dict[str, Any]], report_texts: int, *, attack: str | None,
                       token_attack: str | None, threshold: float, seed: int = 0) -> dict[str, str]:
    """The texts whose token-level data the page carries, id -> why (all of them when they fit).

    Of ``report_texts``: 40% the most member-like by ``attack`` (highest score first), 40% the largest
    leaks (sum of ``token_attack``'s token scores above ``threshold``), 20% a random sample of
    non-members (seeded); a share with nothing to fill goes to the most member-like."""
    ids = [str(r["id"]) for r in rows]
    if report_texts < 0:
        raise ValueError(f"report_texts must be >= 0, got {report_texts}")
    if len(ids) <= report_texts:
        return {tid: "all" for tid in ids}
    chosen: dict[str, str] = {}

    def take(order: Iterable[str], why: str, quota: int) -> None:
        stop = len(chosen) + quota
        for tid in order:
            if len(chosen) >= stop:
                break
            if tid not in chosen:
                chosen[tid] = why

    score = np.array([_finite(r.get(attack)) if attack else None for r in rows], dtype=float)
    member_like = [ids[i] for i in np.argsort(np.where(np.isfinite(score), -score, np.inf), kind="stable")]
    q = {k: round(v * report_texts) for k, v in SELECTION_SHARES.items()}
    take(member_like, "member-like", q["member-like"])
    if token_attack:
        column = token_column(saved.tokens, f"{token_attack}_token")
        leak = np.zeros(len(ids))
        for i, tid in enumerate(ids):
            v = column.get(tid)
            if v is not None:
                a = np.asarray(v, dtype=np.float64)
                leak[i] = a[a > threshold].sum()  # NaN compares False: not leaked
        take([ids[i] for i in np.argsort(-leak, kind="stable") if leak[i] > 0], "leak", q["leak"])
    non = [tid for tid, r in zip(ids, rows) if _label(r.get("label")) == 0 and tid not in chosen]
    if non:
        rng = np.random.default_rng(seed)
        take([non[i] for i in rng.permutation(len(non))], "non-member sample", q["non-member sample"])
    take(member_like, "member-like", report_texts - len(chosen))
    return chosen


def default_threshold(res: dict[str, Any]) -> float:
    """The audit's calibrated leak threshold (results.json ``leak_threshold``, memlens.leakage), rounded up
    to 0.01 so that the page's number keeps the stated rate; the fixed 1.0 for audits saved without one."""
    lt = res.get("leak_threshold") if isinstance(res.get("leak_threshold"), dict) else {}
    v = _finite(lt.get("value"))
    return DEFAULT_THRESHOLD if v is None else math.ceil(v * 100 - 1e-9) / 100


def build_payload(saved: SavedAudit, threshold: float | None = None, report_texts: int = DEFAULT_REPORT_TEXTS) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data (no NaN).

    ``threshold``: the token-score level above which a token counts as leaked; None: the audit's
    calibrated one (:func:`default_threshold`).

    ``texts``: full records (text, spans, token scores) of the texts in the token-view selection
    (:func:`select_token_texts`); ``rest``: the scores of every other text, column-wise (id, label,
    tier, scores per attack), so that the page lists every text at ~80 bytes each."""
    res = saved.results
    if threshold is None:
        threshold = default_threshold(res)
    settings = res.get("settings") if isinstance(res.get("settings"), dict) else {}
    first = saved.scores[0] if saved.scores else {}
    order = [a for a in (settings.get("attacks") or list(res.get("metrics") or {})) if a in first]
    score_cols = order + [c for c in first if c not in order and c not in ("id", "label", "tier")]
    token_attacks = saved.token_attacks()
    info = res.get("attack_info") if isinstance(res.get("attack_info"), dict) else {}
    pii_types: list[str] = []
    rows = saved.scores or [{"id": tid} for tid in saved.texts]
    best = _best_attack(res, score_cols)
    chosen = select_token_texts(saved, rows, report_texts, attack=best, token_attack=token_attacks[0] if token_attacks else None,
                                threshold=threshold)
    texts, rest_rows = [], []
    for r in rows:
        tid = str(r["id"])
        if tid in chosen:
            rec = _text_record(tid, r, saved, score_cols, token_attacks, pii_types)
            rec["why"] = chosen[tid]
            texts.append(rec)
        else:
            rest_rows.append(r)
    rest = _rest_columns(rest_rows, saved, score_cols)
    tok_info = []
    for a in token_attacks:  # the colour scale and slider range from every text's token scores, as `memlens show` has them
        unit = str((info.get(a) or {}).get("unit") or KNOWN_UNITS.get(a, "score"))
        spread = _saved_spread(res, a)
        vals = None if spread is not None else [np.asarray(t, dtype=np.float64) for t in token_column(saved.tokens, f"{a}_token").values()
                                                if t is not None]
        tok_info.append({"name": a, "unit": unit, **_slider(vals, threshold, spread)})
    groups: dict[str, int] = {}
    for why in chosen.values():
        groups[why] = groups.get(why, 0) + 1
    selection = {"n": len(texts), "n_texts": len(rows), "all": len(texts) == len(rows), "report_texts": int(report_texts),
                 "attack": best, "token_attack": token_attacks[0] if token_attacks else None, "groups": groups,
                 "threshold": float(threshold)}
    fpr_keys = _fpr_keys(res)
    metrics = _metrics(res, fpr_keys)
    notes: list[str] = []
    for n in [n for m in metrics for n in m["notes"]] + [str(n) for n in res.get("notes") or []] + list(saved.notes):
        if n not in notes:
            notes.append(n)
    for a, i in info.items():
        if isinstance(i, dict) and i.get("note") and f"{a}: {i['note']}" not in notes:
            notes.append(f"{a}: {i['note']}")
    models = [{"role": "target", **(settings.get("target") or {})}] if isinstance(settings.get("target"), dict) else []
    models += [{"role": "reference", **r} for r in settings.get("references") or [] if isinstance(r, dict)]
    shown = [(k, v if isinstance(v, str) else json.dumps(_clean(v), sort_keys=True)) for k, v in settings.items()
             if k not in ("target", "references")]
    labels = [t["label"] for t in texts] + rest["label"]
    payload = _clean({
        "version": res.get("memlens_version"), "n_texts": len(rows), "selection": selection,
        "n_members": sum(1 for v in labels if v == 1), "n_nonmembers": sum(1 for v in labels if v == 0),
        "settings": shown, "models": models, "fpr_keys": fpr_keys, "metrics": metrics, "notes": notes,
        "attacks": score_cols, "default_attack": next((a for a in ("informia", "informia_token", "rmia") if a in score_cols),
                                                     score_cols[0] if score_cols else None),
        "token_attacks": tok_info, "threshold": float(threshold), "pii_types": pii_types,
        "has_tiers": any(t["tier"] is not None for t in texts) or any(v is not None for v in rest["tier"]),
        "studies": _studies(res), "blind": _blind(res, fpr_keys), "redacted": bool(res.get("redacted")),
        "leak": _leak(res),
    })
    payload["texts"] = texts  # already JSON-safe (walking ~10^6 token numbers again would be slow)
    payload["rest"] = rest
    return payload


def _rest_columns(rows: Sequence[dict[str, Any]], saved: SavedAudit, score_cols: Sequence[str]) -> dict[str, Any]:
    """id, label, tier and scores of texts without a token view, column-wise and JSON-safe."""
    out: dict[str, Any] = {"id": [], "label": [], "tier": [], "scores": {a: [] for a in score_cols}}
    for r in rows:
        tid = str(r["id"])
        trec = saved.texts.get(tid) or {}
        meta = trec.get("meta") if isinstance(trec.get("meta"), dict) else {}
        out["id"].append(tid)
        out["label"].append(_label(r.get("label", trec.get("label"))))
        out["tier"].append(_tier(r["tier"]) if "tier" in r else _tier(meta.get("tier")))
    for a in score_cols:
        v = np.array([_finite(r.get(a)) if _finite(r.get(a)) is not None else np.nan for r in rows], dtype=np.float64)
        out["scores"][a] = _round_list(v, SCORE_DIGITS)
    return out


# ---------------------------------------------------------------------------------------------
# figures


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figures(saved: SavedAudit) -> dict[str, str]:
    """ROC curves (log-log) and member / non-member score histograms, as PNG data URIs.

    Uses matplotlib's object API (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure

    from memlens.plots import fixed_margins, roc_figure

    attacks = [a for a in (saved.results.get("metrics") or {}) if saved.scores and a in saved.scores[0]]
    rows = [r for r in saved.scores if _label(r.get("label")) in (0, 1)]
    if not attacks or not rows:
        return {}
    labels = np.array([_label(r["label"]) for r in rows])
    if set(labels.tolist()) != {0, 1}:
        return {}
    out = {}
    columns = {a: np.array([_finite(r.get(a)) if _finite(r.get(a)) is not None else np.nan for r in rows], dtype=float)
               for a in attacks}
    # the same figure as roc.png (memlens.plots), labelled with the audit's AUCs
    drawn = [a for a in attacks if np.isfinite(columns[a]).any()]
    out["roc"] = _png_data_uri(roc_figure({a: (labels, columns[a]) for a in drawn},
                                          aucs={a: _finite((saved.results["metrics"].get(a) or {}).get("auc")) for a in drawn}))
    cols = min(4, len(attacks))
    nrows = int(np.ceil(len(attacks) / cols))
    fig = Figure(figsize=(3.1 * cols, 2.3 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, a in zip(axes, attacks):
        s = columns[a]
        ok = np.isfinite(s)
        bins = np.histogram_bin_edges(s[ok], bins=30) if ok.sum() > 1 else 10
        ax.hist(s[ok & (labels == 0)], bins=bins, alpha=0.6, label="non-members", color="#4477aa")
        ax.hist(s[ok & (labels == 1)], bins=bins, alpha=0.6, label="members", color="#cc3311")
        ax.set_title(a, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(attacks):]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    fixed_margins(fig, left=0.35, right=0.1, top=0.3, bottom=0.3, between_x=0.45, between_y=0.45)
    out["hist"] = _png_data_uri(fig)
    return out


# ---------------------------------------------------------------------------------------------
# rendering


def safe_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` element: no ``</script>``, no ``<!--``.

    ``<``, ``>`` and ``&`` only occur inside JSON strings, where their ``\\u`` escapes mean the same;
    U+2028/U+2029 are escaped too, and lone surrogates (invalid in UTF-8) become ``\\udXXX`` escapes."""
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
         .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _env():
    from jinja2 import Environment, PackageLoader

    return Environment(loader=PackageLoader("memlens.report", "templates"), autoescape=True, keep_trailing_newline=False)


def render(payload: dict[str, Any], figs: dict[str, str]) -> str:
    env = _env()
    script = env.loader.get_source(env, "report.js")[0]
    if "</script" in script.lower() or "<!--" in script:
        raise RuntimeError("report.js must not contain '</script' or '<!--'")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    return env.get_template("report.html.j2").render(p=payload, figures=figs, data_json=safe_json(payload), script=script, csp=csp)


def _write(path: Path, html: str) -> Path:
    from memlens._io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, html.encode("utf-8", "backslashreplace"), fsync=False)  # bytes: no newline translation


def build_html(saved: SavedAudit, threshold: float | None = None, report_texts: int = DEFAULT_REPORT_TEXTS) -> str:
    return render(build_payload(saved, threshold, report_texts), figures(saved))


def write_report_from_dir(results_dir: str | os.PathLike, *, threshold: float | None = None,
                          out: str | os.PathLike | None = None, report_texts: int = DEFAULT_REPORT_TEXTS) -> Path:
    """Rebuild ``report.html`` (or ``out``) from an audit's saved files (``memlens report DIR``).

    ``report_texts``: how many texts get a token view in the page (:func:`select_token_texts`)."""
    saved = load_saved(results_dir)
    if out is not None:
        return _write(Path(out), build_html(saved, threshold, report_texts))
    return _write_in_set(Path(results_dir), build_html(saved, threshold, report_texts))


def write_redacted_report_from_dir(results_dir: str | os.PathLike, *, threshold: float | None = None, field: str = "pii",
                                   out: str | os.PathLike | None = None, leak_threshold: float | None = None,
                                   report_texts: int = DEFAULT_REPORT_TEXTS) -> Path:
    """``memlens report DIR --redact``: the report of a saved audit with its secrets redacted
    (:func:`memlens.redact.redact_saved`; ``threshold``: also every token scored above it)."""
    from memlens.redact import redact_saved

    saved = redact_saved(load_saved(results_dir), field=field, threshold=threshold)
    return _write(Path(out) if out is not None else Path(results_dir) / "report.html", build_html(saved, leak_threshold, report_texts))


def write_report(result, out_dir: str | os.PathLike, *, threshold: float | None = None,
                 report_texts: int = DEFAULT_REPORT_TEXTS) -> Path:
    """Write ``out_dir/report.html`` for an audit result (from memory: nothing else is written or read).

    ``report_texts``: how many texts get a token view in the page (:func:`select_token_texts`)."""
    return _write_in_set(Path(out_dir), build_html(SavedAudit.from_result(result), threshold, report_texts))


def _write_in_set(d: Path, html: str) -> Path:
    """report.html of an output directory, recorded in its manifest (memlens.outputs) when it has one."""
    from memlens.outputs import add_to_set

    path = _write(d / "report.html", html)
    add_to_set(d, "report.html")
    return path


def iter_token_pieces(text: str, starts: Iterable[int], ends: Iterable[int]):
    """(kind, i, piece) over a text: kind "gap" for text between tokens, "tok" for token i's text.

    A character split over several byte-level tokens (same span twice) is shown once, at the first."""
    pos = 0
    for i, (s, e) in enumerate(zip(starts, ends)):
        s, e = int(s), int(e)
        if s > pos:
            yield "gap", -1, text[pos:s]
        yield "tok", i, text[max(s, pos):e] if e > pos else ""
        pos = max(pos, e)
    if pos < len(text):
        yield "gap", -1, text[pos:]
