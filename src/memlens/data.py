"""Loading and validating the texts to audit.

Formats: JSONL (``.jsonl``/``.ndjson``), JSON (a list of records), CSV/TSV, Parquet, and plain
text (``.txt``: one text per line) or a directory of ``.txt`` files (one text per file). Records
need a text field (``text`` by default), or ``prompt`` + ``completion``, or ``messages`` (a chat; see
:mod:`memlens.scope`), and may carry ``id``, ``label`` (1 member, 0 non-member)
and anything else, which is kept in ``meta`` (e.g. ``tier``, ``pii``).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from memlens.errors import DataError  # noqa: F401  (re-exported: its old home)
from memlens.scope import is_chat, record_text


@dataclass
class Sample:
    id: str
    text: str
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt"}


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DataError(f"{path}: directory holds no .txt files")
        return [{"id": f.stem, "text": _read_text(f)} for f in files]
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix!r}; use one of {', '.join(sorted(TEXT_SUFFIXES))} or a directory of .txt files")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    content = _read_text(path)
    if suffix in (".jsonl", ".ndjson"):
        records = []
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            records.append(rec)
        return records
    if suffix == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{path}: a .json file must hold a list of objects")
        return data
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(content.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")
        return list(reader)
    return [{"text": line} for line in content.splitlines()]  # .txt: one text per line


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: drop the byte-order mark that Excel and Notepad put first (it would otherwise
        # end up in the first column name or the first text).
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8 first") from None


def _parse_label(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        v = value.strip().lower()
        table = {"1": 1, "0": 0, "member": 1, "nonmember": 0, "non-member": 0, "true": 1, "false": 0}
        if v in table:
            return table[v]
    elif isinstance(value, (int, float, np.integer, np.floating)) and float(value) in (0.0, 1.0):
        return int(value)
    raise DataError(f"{where}: label {value!r} is not 1 (member) or 0 (non-member)")


def check_text(text: str, where: str) -> None:
    """Refuse a text with a lone surrogate (e.g. a JSON ``"\\ud800"`` escape): it is not valid Unicode,
    cannot be encoded as UTF-8 (so cannot be hashed, tokenized or written), and any repair would
    audit another text than the one given."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where}: invalid Unicode, a lone surrogate {text[e.start]!r} at character {e.start}; "
                        "fix or drop this text") from None


def _check_label(label: int | None, default_label: int | None, where: str, rid: str) -> int | None:
    """A members/non-members file decides the label: a record that says otherwise is an error, not an override."""
    if default_label is not None and label is not None and label != default_label:
        role = "members" if default_label == 1 else "non-members"
        raise DataError(f"{where}: text {rid!r} has label {label}, but it was given as {role} "
                        "(the file decides: remove the label field, or pass the file as --data)")
    return default_label if label is None else label


def load_samples(path: str | os.PathLike, *, text_field: str = "text", id_field: str = "id", label_field: str = "label",
                 default_label: int | None = None, id_prefix: str | None = None) -> list[Sample]:
    """Read one file of texts. ``default_label`` fills records without a label."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: holds no records")
    if text_field not in records[0] and record_text(records[0], text_field, f"{path} record 1") is None:
        cols = ", ".join(map(str, records[0].keys()))
        raise DataError(f"{path}: no {text_field!r} field (fields: {cols}); pass --text-field to name the text column, "
                        "or give prompt/completion or messages records")
    samples = []
    for n, rec in enumerate(records):
        where = f"{path} record {n + 1}"
        shaped = record_text(rec, text_field, where)  # prompt/completion or chat records
        text = rec.get(text_field) if shaped is None else shaped[0]
        if not isinstance(text, str):
            raise DataError(f"{where}: {text_field!r} is {type(text).__name__}, not a string")
        if not text.strip() and (shaped is None or not is_chat(shaped[1])):
            raise DataError(f"{where}: empty text")
        rid = rec.get(id_field)
        rid = f"{id_prefix or path.stem}-{n}" if rid is None or rid == "" else str(rid)
        check_text(text, where)
        check_text(rid, f"{where} (id)")
        label = _check_label(_parse_label(rec.get(label_field), where), default_label, str(path), rid)
        used = (text_field, id_field, label_field, *(shaped[2] if shaped else ()))
        meta = {k: v for k, v in rec.items() if k not in used}
        meta.update(shaped[1] if shaped else {})
        samples.append(Sample(rid, text, label, meta))
    return samples


def as_samples(data: str | os.PathLike | Sequence[str] | Sequence[Sample] | Sequence[dict] | None, *, default_label: int | None = None,
               name: str = "texts", **kwargs) -> list[Sample]:
    """Accept a path, a list of strings, of dicts or of Samples (the Python API's inputs)."""
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)):
        return load_samples(data, default_label=default_label, **kwargs)
    out = []
    for n, item in enumerate(data):
        if isinstance(item, Sample):
            s = Sample(item.id, item.text, _check_label(item.label, default_label, name, item.id), dict(item.meta))
        elif isinstance(item, str):
            s = Sample(f"{name}-{n}", item, default_label)
        elif isinstance(item, dict):
            tf = kwargs.get("text_field", "text")
            shaped = record_text(item, tf, f"{name} item {n}")  # prompt/completion or chat records
            text = item.get(tf) if shaped is None else shaped[0]
            if not isinstance(text, str):
                raise DataError(f"{name} item {n}: no text string")
            rid = str(item.get("id", f"{name}-{n}"))
            label = _check_label(_parse_label(item.get("label"), f"{name} item {n}"), default_label, name, rid)
            used = ("id", tf, "label", *(shaped[2] if shaped else ()))
            s = Sample(rid, text, label, {k: v for k, v in item.items() if k not in used})
            s.meta.update(shaped[1] if shaped else {})
        else:
            raise DataError(f"{name} item {n}: expected a string, dict or Sample, got {type(item).__name__}")
        if not isinstance(s.text, str):
            raise DataError(f"{name} item {n} ({s.id}): text is {type(s.text).__name__}, not a string")
        check_text(s.text, f"{name} item {n} ({s.id!r})")
        check_text(s.id, f"{name} item {n} (id)")
        if not s.text.strip() and not is_chat(s.meta):  # a chat's text is rendered later, with the target's tokenizer
            raise DataError(f"{name} item {n} ({s.id}): empty text")
        out.append(s)
    return out


def check_unique_ids(samples: Iterable[Sample], what: str = "texts") -> None:
    seen: dict[str, int] = {}
    for s in samples:
        seen[s.id] = seen.get(s.id, 0) + 1
    dup = [i for i, c in seen.items() if c > 1]
    if dup:
        raise DataError(f"duplicate ids among the {what}: {', '.join(dup[:5])}{' ...' if len(dup) > 5 else ''}")


def check_labels(samples: Sequence[Sample]) -> None:
    """Metrics need both classes: refuse unlabelled or single-class data with a clear message."""
    missing = [s.id for s in samples if s.label is None]
    if missing:
        raise DataError(f"{len(missing)} texts have no label (e.g. {missing[0]}); give --members/--nonmembers files or a label field")
    labels = {s.label for s in samples}
    if labels != {0, 1}:
        only = "members" if labels == {1} else "non-members"
        raise DataError(f"all {len(samples)} labelled texts are {only}: metrics need both members and non-members")


def gather_audit_samples(members=None, nonmembers=None, labelled=None, **kwargs) -> list[Sample]:
    """Members and non-members from two sources and/or one labelled source, ids unique."""
    samples = as_samples(members, default_label=1, name="members", **kwargs)
    samples += as_samples(nonmembers, default_label=0, name="nonmembers", **kwargs)
    samples += as_samples(labelled, default_label=None, name="texts", **kwargs)
    if not samples:
        raise DataError("no texts to audit: give --members and --nonmembers, or --data with a label field")
    check_unique_ids(samples)
    return samples


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection). OWASP's
# advice: prefix such a cell with a single quote. A cell that already starts with a quote gets one
# too, so reading back (drop one leading quote) is exact for every string.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_escape(value: Any) -> Any:
    """A string cell made safe to open in a spreadsheet (other values unchanged)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def spreadsheet_unescape(value: Any) -> Any:
    """The inverse of :func:`spreadsheet_escape`, for reading a memlens CSV back."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value
