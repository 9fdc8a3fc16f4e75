"""Member / non-member sets in the layouts of published benchmarks (issue 16, item 4; library part).

Two layouts cover the standard LLM membership benchmarks:

* ``labelled``: one text field and a label field per row (WikiMIA: ``input`` and ``label``,
  1 = member / seen, 0 = non-member).
* ``paired``: a member text and a non-member text in two fields of each row (MIMIR: ``member``
  and ``nonmember``).

Sources: a local Parquet / JSONL / JSON file (no extra dependency), or, with the optional Hugging
Face ``datasets`` package, a directory written by ``Dataset.save_to_disk`` or a hub id (where the
hub is reachable; ``revision`` pins a commit). Rows go through :func:`memlens.data.as_samples`, the
same validation as the CLI's JSONL input. Run :mod:`memlens.blind` on what you load: WikiMIA's
and several MIMIR splits' members and non-members differ without any model (Das et al. 2024).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from memlens.data import DataError, Sample, as_samples

PRESETS: dict[str, dict[str, str]] = {
    "wikimia": {"layout": "labelled", "text_field": "input", "label_field": "label"},
    "mimir": {"layout": "paired", "member_field": "member", "nonmember_field": "nonmember"},
}
LAYOUTS = ("labelled", "paired")


def _rows_from_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = path.read_text(encoding="utf-8-sig")
        try:
            rows = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e.msg})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path}: expected JSON objects, one per row")
        return rows
    raise DataError(f"{path}: unknown file type {suffix!r}; use .parquet, .jsonl or .json, a save_to_disk directory, or a hub id")


def _rows(source: str | os.PathLike, split: str | None, config: str | None, revision: str | None) -> list[dict[str, Any]]:
    path = Path(source)
    if path.is_file():
        return _rows_from_file(path)
    try:
        import datasets
    except ImportError:
        what = "a save_to_disk directory" if path.is_dir() else f"{source!r} (not a local file: read as a hub id)"
        raise DataError(f"loading {what} needs the Hugging Face datasets package: pip install datasets") from None
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(source), config, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 - datasets raises many unrelated types (hub, cache, format); the user needs one line
        detail = " ".join(str(e).split())  # some messages span lines; the CLI prints one
        raise DataError(f"{source}: could not load the dataset ({type(e).__name__}: {detail})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            raise DataError(f"{source}: holds splits {', '.join(ds)}; choose one with split=")
        if split not in ds:
            raise DataError(f"{source}: no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    return ds.to_list()


def load_benchmark(source: str | os.PathLike, preset: str | None = None, *, layout: str | None = None, split: str | None = None,
                   config: str | None = None, revision: str | None = None, text_field: str | None = None,
                   label_field: str | None = None, member_field: str | None = None, nonmember_field: str | None = None,
                   limit: int | None = None) -> list[Sample]:
    """Labelled samples (members 1, non-members 0) from a benchmark in its own layout.

    ``preset`` ("wikimia", "mimir") fills the layout and field names; explicit arguments override
    it. Without a preset the layout is "labelled" with fields ``text``/``label``. ``limit`` keeps
    the first ``limit`` members and the first ``limit`` non-members (rows, for the paired layout).
    """
    if preset is not None and preset not in PRESETS:
        raise DataError(f"unknown benchmark preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = dict(PRESETS.get(preset, {"layout": "labelled", "text_field": "text", "label_field": "label"}))
    overrides = {"layout": layout, "text_field": text_field, "label_field": label_field, "member_field": member_field,
                 "nonmember_field": nonmember_field}
    spec.update({k: v for k, v in overrides.items() if v is not None})
    if spec["layout"] not in LAYOUTS:
        raise DataError(f"unknown layout {spec['layout']!r}; choose from {', '.join(LAYOUTS)}")
    rows = _rows(source, split, config, revision)
    if not rows:
        raise DataError(f"{source}: holds no rows")
    if limit is not None and spec["layout"] == "paired":
        rows = rows[:limit]
    fields = list(rows[0].keys())
    needed = [spec["text_field"], spec["label_field"]] if spec["layout"] == "labelled" else [
        spec.setdefault("member_field", "member"), spec.setdefault("nonmember_field", "nonmember")]
    for f in needed:
        if f not in rows[0]:
            hint = "text_field/label_field" if spec["layout"] == "labelled" else "member_field/nonmember_field"
            raise DataError(f"{source}: no {f!r} field (fields: {', '.join(map(str, fields))}); name the fields with {hint}")
    name = Path(str(source)).stem or "benchmark"
    if spec["layout"] == "labelled":
        items = [{"id": r.get("id", f"{name}-{i}"), "text": r[spec["text_field"]], "label": r[spec["label_field"]],
                  **{k: v for k, v in r.items() if k not in (spec["text_field"], spec["label_field"], "id")}} for i, r in enumerate(rows)]
        samples = as_samples(items, name=str(source))
        missing = [s.id for s in samples if s.label is None]
        if missing:
            raise DataError(f"{source}: {len(missing)} rows have no {spec['label_field']!r} value (e.g. {missing[0]})")
        if limit is not None:  # of each label: benchmarks often list all members first
            seen: dict[int, int] = {}
            kept = []
            for s in samples:  # in the file's order
                seen[s.label] = seen.get(s.label, 0) + 1
                if seen[s.label] <= limit:
                    kept.append(s)
            samples = kept
        return samples
    members = [{"id": f"{name}-member-{i}", "text": r[spec["member_field"]]} for i, r in enumerate(rows)]
    nonmembers = [{"id": f"{name}-nonmember-{i}", "text": r[spec["nonmember_field"]]} for i, r in enumerate(rows)]
    return (as_samples(members, default_label=1, name=f"{source} {spec['member_field']}")
            + as_samples(nonmembers, default_label=0, name=f"{source} {spec['nonmember_field']}"))
