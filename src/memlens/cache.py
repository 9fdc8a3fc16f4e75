"""Content-addressed on-disk cache of per-token statistics (Parquet shards).

Layout: ``ROOT/<namespace>/`` where the namespace is a hash of what determines the numbers
(model fingerprint, tokenizer fingerprint, pass settings); ``key.json`` there says what it is.
Each namespace holds shards ``<sha256 of the file>.parquet``; a shard holds one record per text,
keyed by the text's SHA-256, with one list column per per-token array.

Writes are atomic (temporary file, fsync, rename), so a killed run never leaves a half-written
shard under a valid name, and the next run computes only the texts that are missing. A shard whose
bytes do not match its name, or that does not parse, is reported and moved aside (renamed
``*.corrupt``), never used and never deleted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memlens._io import TMP_PREFIX, atomic_write, json_hash

log = logging.getLogger("memlens")

Record = dict[str, np.ndarray]  # per-token arrays of one text, [T] or [T, d]
_TMP_PREFIX = TMP_PREFIX  # files being written; renamed into place when complete


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_hash(key: dict) -> str:
    return json_hash(key, 24)


def default_cache_dir() -> Path:
    env = os.environ.get("MEMLENS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memlens"


class CacheNamespace:
    """Records of one (model(s), settings) key."""

    def __init__(self, root: Path | None, key: dict):
        self.key = key
        self.dir = None if root is None else Path(root) / key_hash(key)
        self._mem: dict[str, Record] = {}
        self._loaded = False

    def _load_all(self) -> None:
        if self._loaded or self.dir is None:
            self._loaded = True
            return
        self._loaded = True
        if not self.dir.is_dir():
            return
        for shard in sorted(self.dir.glob("*.parquet")):
            if shard.name.startswith(_TMP_PREFIX):
                continue  # a write that a killed run never finished (pathlib's glob matches dot-files)
            data = shard.read_bytes()
            if hashlib.sha256(data).hexdigest()[:32] != shard.stem:
                self._quarantine(shard, "its contents do not match its checksum")
                continue
            try:
                table = pq.read_table(pa.BufferReader(data))
                self._mem.update(_table_to_records(table))
            except Exception as e:  # a valid checksum but unreadable file: written by another version?
                self._quarantine(shard, f"it cannot be read ({type(e).__name__}: {e})")

    def _quarantine(self, shard: Path, why: str) -> None:
        log.warning("cache shard %s is not used: %s; it is renamed to .corrupt and its texts will be recomputed", shard, why)
        try:
            shard.rename(shard.with_suffix(".corrupt"))
        except OSError:
            pass

    def get(self, hashes: Iterable[str]) -> dict[str, Record]:
        self._load_all()
        return {h: self._mem[h] for h in hashes if h in self._mem}

    def missing(self, hashes: Iterable[str]) -> list[str]:
        self._load_all()
        return [h for h in hashes if h not in self._mem]

    def put(self, records: dict[str, Record]) -> None:
        """Keep records in memory and, when the cache is on, write them as one new shard."""
        if not records:
            return
        self._load_all()
        self._mem.update(records)
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            _atomic_write(key_file, json.dumps(self.key, indent=2, sort_keys=True, default=str).encode())
        sink = pa.BufferOutputStream()
        pq.write_table(_records_to_table(records), sink)
        data = sink.getvalue().to_pybytes()
        _atomic_write(self.dir / f"{hashlib.sha256(data).hexdigest()[:32]}.parquet", data)


class StatsCache:
    """Entry point: ``StatsCache(root)`` or ``StatsCache(None)`` for an in-memory cache."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = None if root is None else Path(root)
        self._spaces: dict[str, CacheNamespace] = {}

    def namespace(self, key: dict) -> CacheNamespace:
        h = key_hash(key)
        if h not in self._spaces:
            self._spaces[h] = CacheNamespace(self.root, key)
        return self._spaces[h]


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def _records_to_table(records: dict[str, Record]) -> pa.Table:
    names = sorted({k for r in records.values() for k in r})
    cols: dict[str, list] = {"text_hash": list(records)}
    dims: dict[str, list[int]] = {}
    for name in names:
        col = []
        for h, rec in records.items():
            if name not in rec:
                raise ValueError(f"record {h} lacks field {name}")
            a = np.asarray(rec[name])
            dims.setdefault(name, [str(a.dtype), *a.shape[1:]])
            col.append(a.reshape(-1))
        cols[name] = col
    table = pa.table(cols)
    return table.replace_schema_metadata({"memlens_dims": json.dumps(dims)})


def _table_to_records(table: pa.Table) -> dict[str, Record]:
    meta = json.loads((table.schema.metadata or {}).get(b"memlens_dims", b"{}"))
    out: dict[str, Record] = {}
    hashes = table.column("text_hash").to_pylist()
    fields = [n for n in table.column_names if n != "text_hash"]
    flat = {}
    for n in fields:
        col = table.column(n).combine_chunks()  # a list array: offsets into one values buffer
        flat[n] = (col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False))
    for i, h in enumerate(hashes):
        rec = {}
        for n in fields:
            dtype, *tail = meta.get(n, ["float32"])
            offsets, values = flat[n]
            a = np.asarray(values[offsets[i]:offsets[i + 1]], dtype=dtype)
            rec[n] = a.reshape(-1, *tail) if tail else a
        out[h] = rec
    return out
