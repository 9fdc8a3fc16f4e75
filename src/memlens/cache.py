"""Content-addressed on-disk cache of per-token statistics (Parquet shards).

Layout: ``ROOT/<namespace>/`` where the namespace is a hash of what determines the numbers
(model fingerprint, tokenizer fingerprint, pass settings); ``key.json`` there says what it is.
Each namespace holds shards ``<sha256 of the file>.parquet``; a shard holds one record per text,
keyed by the text's SHA-256, with one list column per per-token array.

Writes are atomic (temporary file, fsync, rename), so a killed run never leaves a half-written
shard under a valid name, and the next run computes only the texts that are missing. A shard whose
bytes do not match its name, or that does not parse, is reported and moved aside (renamed
``*.corrupt``), never used and never deleted.

Privacy: a shard holds the token ids of every text audited (so the texts can be rebuilt from it
with the tokenizer), kept until removed: :func:`cache_info` and :func:`clear_cache` (``memlens cache
info|clear [--older-than]``) show and remove it. ``file-hashes.json`` in the root memoizes the
content hashes of model files (paths and hashes only, see memlens.models.loading).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
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
    """Records of one (model(s), settings) key.

    Never loads the whole namespace: an index (text hash -> shard, from each shard's ``text_hash``
    column) answers what is cached, and :meth:`get` reads only the shards holding the texts asked
    for, without keeping them. Memory then grows with what a caller asks for at once (the audit
    asks a chunk of texts at a time), not with the cache. Without a directory (an in-memory cache)
    the records are kept in memory instead."""

    def __init__(self, root: Path | None, key: dict):
        self.key = key
        self.dir = None if root is None else Path(root) / key_hash(key)
        self._mem: dict[str, Record] = {}  # the in-memory cache (no directory) only
        self._index: dict[str, str] = {}  # text hash -> shard file name, for the shards read or written here
        self._scanned = False
        self._seen: set[str] = set()  # shards in the index (scanned, or written by this process)
        self._lock = threading.Lock()  # the pass writes shards from a background thread

    def refresh(self) -> None:
        """Index the shards written since the last scan (by other processes of a data-parallel run)."""
        self._scanned = False
        self._scan()

    def _scan(self) -> None:
        with self._lock:
            if self._scanned or self.dir is None:
                self._scanned = True
                return
            self._scanned = True
            if not self.dir.is_dir():
                return
            memo = _verified_memo(self.dir.parent)
            for shard in sorted(self.dir.glob("*.parquet")):
                if shard.name.startswith(_TMP_PREFIX) or shard.name in self._seen:
                    continue  # a write that a killed run never finished (pathlib's glob matches dot-files), or indexed
                table = self._verified_read(shard, memo, columns=["text_hash"])
                if table is not None:
                    self._index.update(dict.fromkeys(table.column("text_hash").to_pylist(), shard.name))
                    self._seen.add(shard.name)
            memo.save()

    def _verified_read(self, shard: Path, memo: _VerifiedMemo, columns: list[str] | None = None) -> pa.Table | None:
        """The shard's table (or some of its columns), its checksum checked unless checked before with this
        size and time; None (and the shard set aside) when it does not match or parse, or it is gone."""
        try:
            st = shard.stat()
            source = shard if memo.known(shard, st) else shard.read_bytes()
        except FileNotFoundError:  # removed meanwhile (``memlens cache clear``): its texts are recomputed
            return None
        if not isinstance(source, Path):
            if hashlib.sha256(source).hexdigest()[:32] != shard.stem:
                self._quarantine(shard, "its contents do not match its checksum")
                return None
            memo.add(shard, st)
        try:  # not memory-mapped
            return pq.read_table(source if isinstance(source, Path) else pa.BufferReader(source), columns=columns)
        except Exception as e:  # a valid checksum but unreadable file: written by another version?
            memo.forget(shard)
            self._quarantine(shard, f"it cannot be read ({type(e).__name__}: {e})")
            return None

    def _quarantine(self, shard: Path, why: str) -> None:
        log.warning("cache shard %s is not used: %s; it is renamed to .corrupt and its texts will be recomputed", shard, why)
        try:
            shard.rename(shard.with_suffix(".corrupt"))
        except OSError:
            pass

    def shards(self, hashes: Iterable[str]) -> dict[str, str | None]:
        """Which shard holds each text (None: kept in memory, or not cached; see :meth:`missing`)."""
        self._scan()
        return {h: self._index.get(h) for h in hashes}

    def get(self, hashes: Iterable[str]) -> dict[str, Record]:
        """The cached records of these texts (the others are left out), each shard holding any of them
        read once. The records are not kept: asking again reads again."""
        self._scan()
        out: dict[str, Record] = {}
        by_shard: dict[str, set[str]] = {}
        for h in hashes:
            if h in self._mem:
                out[h] = self._mem[h]
            elif h in self._index:
                by_shard.setdefault(self._index[h], set()).add(h)
        if by_shard:
            memo = _verified_memo(self.dir.parent)
            for name, want in by_shard.items():
                table = self._verified_read(self.dir / name, memo)
                if table is None:
                    with self._lock:  # gone or set aside: its texts count as missing from now on
                        self._index = {h: s for h, s in self._index.items() if s != name}
                    continue
                if len(want) < table.num_rows:
                    keep = pa.compute.is_in(table.column("text_hash"), value_set=pa.array(sorted(want), pa.string()))
                    table = table.filter(keep)
                out.update(_table_to_records(table))
            memo.save()
        return out

    def missing(self, hashes: Iterable[str]) -> list[str]:
        self._scan()
        return [h for h in hashes if h not in self._mem and h not in self._index]

    def put(self, records: dict[str, Record]) -> None:
        """Write the records as one new shard (the in-memory cache: keep them)."""
        if not records:
            return
        if self.dir is None:
            with self._lock:
                self._mem.update(records)
            return
        # No read of the existing shards here: a process that only writes (a data-parallel worker) never scans
        # the cache; a later get() indexes the shards this process has not written.
        sink = pa.BufferOutputStream()
        pq.write_table(_records_to_table(records), sink)
        data = sink.getvalue().to_pybytes()
        shard = self.dir / f"{hashlib.sha256(data).hexdigest()[:32]}.parquet"
        # A concurrent ``clear_cache`` may remove the (empty) directory between mkdir and the write:
        # make it again once. key.json is written after the shard, so a namespace with shards has it.
        for attempt in (0, 1):
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                _atomic_write(shard, data)
                st = shard.stat()
                with self._lock:
                    self._seen.add(shard.name)
                    self._index.update(dict.fromkeys(records, shard.name))
                _verified_memo(self.dir.parent).add(shard, st)  # written here: no need to hash it again on read
                break
            except FileNotFoundError:
                if attempt:
                    raise
        key_file = self.dir / "key.json"
        if not key_file.exists():
            _atomic_write(key_file, json.dumps(self.key, indent=2, sort_keys=True, default=str).encode())


VERIFIED_MEMO = "verified-shards.json"


class _VerifiedMemo:
    """Shards whose SHA-256 matched their name, by (namespace/shard name) -> [size, mtime in ns], kept in
    the cache root: a shard is hashed once, not at every read (``memlens attack`` reads every shard of
    20,000 texts each time). A shard changed since has another size or time and is hashed again; one
    rewritten in place with the same size and a restored time would not be (as with the model files'
    hash memo). Several processes may save it: the last one wins, and a lost entry only costs a rehash."""

    def __init__(self, root: Path):
        self.path = root / VERIFIED_MEMO
        self._lock = threading.Lock()
        self._dirty = False
        try:
            self.entries: dict[str, list[int]] = json.loads(self.path.read_text())
            if not isinstance(self.entries, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _name(shard: Path) -> str:
        return f"{shard.parent.name}/{shard.name}"

    def known(self, shard: Path, st: os.stat_result) -> bool:
        return self.entries.get(self._name(shard)) == [st.st_size, st.st_mtime_ns]

    def add(self, shard: Path, st: os.stat_result) -> None:
        with self._lock:
            self.entries[self._name(shard)] = [st.st_size, st.st_mtime_ns]
            self._dirty = True

    def forget(self, shard: Path) -> None:
        with self._lock:
            self._dirty = self.entries.pop(self._name(shard), None) is not None or self._dirty

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            # entries of shards that are gone (cleared, set aside) are dropped
            self.entries = {k: v for k, v in self.entries.items() if (self.path.parent / k).is_file()}
            try:
                atomic_write(self.path, json.dumps(self.entries), fsync=False)
                self._dirty = False
            except OSError:  # a read-only cache: shards are hashed at every read, as before
                pass


_MEMOS: dict[Path, _VerifiedMemo] = {}
_MEMOS_LOCK = threading.Lock()


def _verified_memo(root: Path) -> _VerifiedMemo:
    with _MEMOS_LOCK:
        key = root.resolve()
        if key not in _MEMOS or not _MEMOS[key].path.parent.is_dir():
            _MEMOS[key] = _VerifiedMemo(root)
        return _MEMOS[key]


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


@dataclass
class CacheInfo:
    """What a cache directory holds (``memlens cache info``)."""

    root: Path
    exists: bool
    size_bytes: int = 0  # every file under the root, shards, key files, set-aside and unfinished files
    namespaces: int = 0  # (model(s), settings) keys with at least one shard
    shards: int = 0
    corrupt: int = 0  # shards set aside as ``*.corrupt``
    unfinished: int = 0  # ``.tmp-*`` files: writes in progress, or left by a killed run
    oldest: float | None = None  # modification time (seconds since the epoch) of the oldest shard
    newest: float | None = None
    kinds: dict[str, int] = field(default_factory=dict)  # namespaces per key kind (causal, causal-pair, masked...)


@dataclass
class ClearResult:
    """What :func:`clear_cache` removed."""

    files: int = 0
    bytes: int = 0
    namespaces: int = 0  # namespace directories removed whole


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"45s"`` (or a bare number of days) in seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise ValueError(f"not a duration: {text!r}; use e.g. 30d, 12h, 90m, 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "d"]


# the token-level results an audit writes while its attacks run over chunks of texts (memlens.token_file.TokenStore),
# beside the namespaces: ``.tmp-*`` files, removed when the audit's result is done with them (or by clear_cache when
# a killed run left them)
SPILL_DIR = "token-spill"
BLIND_DIR = "blind"  # the blind baseline's cached out-of-fold scores (memlens.blind.BlindJob), beside the namespaces


def _namespace_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and d.name not in (BLIND_DIR, SPILL_DIR)) if root.is_dir() else []


def cache_info(root: str | os.PathLike | None = None) -> CacheInfo:
    """Size, namespaces, shards and the age range of a cache directory (default: :func:`default_cache_dir`)."""
    root = Path(root) if root is not None else default_cache_dir()
    info = CacheInfo(root, root.is_dir())
    if not info.exists:
        return info
    for path in root.rglob("*"):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed by a concurrent writer or clear
            continue
        if path.is_file():
            info.size_bytes += st.st_size
    for d in _namespace_dirs(root):
        shards = [p for p in d.glob("*.parquet") if not p.name.startswith(_TMP_PREFIX)]
        info.corrupt += len(list(d.glob("*.corrupt")))
        info.unfinished += len(list(d.glob(_TMP_PREFIX + "*")))
        times = []
        for p in shards:
            try:
                times.append(p.stat().st_mtime)
            except FileNotFoundError:
                continue
        if not times:
            continue
        info.namespaces += 1
        info.shards += len(times)
        info.oldest = min(times + ([info.oldest] if info.oldest is not None else []))
        info.newest = max(times + ([info.newest] if info.newest is not None else []))
        try:
            kind = str(json.loads((d / "key.json").read_text()).get("kind", "unknown"))
        except (OSError, ValueError, AttributeError):
            kind = "unknown"
        info.kinds[kind] = info.kinds.get(kind, 0) + 1
    return info


# An unfinished ``.tmp-*`` file younger than this may belong to a run writing right now: never removed.
TMP_GRACE_S = 3600.0


def clear_cache(root: str | os.PathLike | None = None, *, older_than: float | None = None, now: float | None = None) -> ClearResult:
    """Remove cached statistics: everything, or only shards last written more than ``older_than``
    seconds ago (see :func:`parse_duration`).

    Safe beside running audits: only finished shards are removed (a writer's ``.tmp-*`` file is left
    alone unless older than an hour, i.e. left by a killed run); a reader that loses a shard
    recomputes its texts; a writer whose namespace directory disappears makes it again. Files that
    are not memlens's (anything but shards, key.json, set-aside and unfinished files, the blind
    baseline's cached scores and the file and shard hash memos) are never touched, so pointing this at
    a wrong directory removes nothing else.
    """
    root = Path(root) if root is not None else default_cache_dir()
    res = ClearResult()
    now = time.time() if now is None else now
    if not root.is_dir():
        return res

    def old(p: Path, age: float | None) -> bool:
        try:
            return age is None or now - p.stat().st_mtime > age
        except FileNotFoundError:
            return False

    def remove(p: Path) -> None:
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return
        res.files += 1
        res.bytes += size

    for d in _namespace_dirs(root):
        for p in list(d.glob("*.parquet")) + list(d.glob("*.corrupt")):
            if not p.name.startswith(_TMP_PREFIX) and old(p, older_than):
                remove(p)
        for p in d.glob(_TMP_PREFIX + "*"):
            if old(p, max(TMP_GRACE_S, older_than or 0.0)):
                remove(p)
        if not any(d.glob("*.parquet")) and not any(d.glob("*.corrupt")) and not any(d.glob(_TMP_PREFIX + "*")):
            if (d / "key.json").exists():
                remove(d / "key.json")
            try:
                d.rmdir()  # fails (and is left) when a writer has just put a file there, or it holds foreign files
                res.namespaces += 1
            except OSError:
                pass
    spill = root / SPILL_DIR
    if spill.is_dir():
        for p in spill.glob(_TMP_PREFIX + "*"):
            if old(p, max(TMP_GRACE_S, older_than or 0.0)):
                remove(p)
        with contextlib.suppress(OSError):
            spill.rmdir()
    blind = root / BLIND_DIR
    if blind.is_dir():
        for p in blind.glob("*.json"):
            if old(p, older_than):
                remove(p)
        with contextlib.suppress(OSError):
            blind.rmdir()  # left when it still holds newer entries (or foreign files)
    for name in ("file-hashes.json", VERIFIED_MEMO):
        memo = root / name
        if older_than is None and memo.is_file():
            remove(memo)
    with _MEMOS_LOCK:
        _MEMOS.pop(root.resolve(), None)
    return res


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
