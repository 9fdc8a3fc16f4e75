"""An audit's output directory as one set: checked before the pass, written whole, verified when read.

``preflight(out, cache_root, n_chars, n_models)``: before any model loads, refuse an ``--out`` that is a
file or lies under one, a directory that cannot be written, and a disk with too little free space
for an estimate of what the run writes, so a bad location costs a second, not an hour of scoring.

``write_set(out, writers)``: every file is first written into ``out/.staging-*``; only when all of
them are complete is ``manifest.json`` (name, size and SHA-256 of each file, and a run id) computed
there. The manifest is renamed into ``out/`` first, then each file, then the memlens outputs of an
earlier run that this one did not produce (a ``report.html`` after ``--no-report``, a ``roc.png``
without metrics) are removed. A failure while staging (a full disk) leaves ``out/`` as it was; a kill
during the renames leaves files that do not match the manifest, which :func:`verify_set` refuses.
Files in ``out/`` that memlens did not write are never touched.

``verify_set(dir)``: the readers (``memlens report``, ``memlens show``) refuse a directory whose
files do not match its manifest. A directory without a manifest (written before manifests existed) is
read as before.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from memlens._io import atomic_write
from memlens.errors import DataError, MemlensError

MANIFEST = "manifest.json"
# What an audit writes: the only files write_set ever replaces or removes in an output directory.
OWNED = ("scores.csv", "texts.jsonl", "results.json", "token_scores.parquet", "roc.png", "report.html")
STAGING_PREFIX = ".staging-"
# Built from the others and never read back: verify_set does not check it (``memlens report`` rebuilds
# a deleted or stale one, and records the new one in the manifest).
DERIVED = ("report.html",)

# Free space asked for, per character of text and model: the cache record (about 40 bytes per token
# for the target's statistics, a token being ~3 characters) plus the token parquet; twice that as margin.
BYTES_PER_CHAR_PER_MODEL = 2 * 40 / 3
MIN_FREE_BYTES = 16 << 20


class OutputError(MemlensError, OSError):
    """An output or cache location cannot take the run's files (a file in the way, no write access, a full disk)."""


def estimate_bytes(n_chars: int, n_models: int) -> int:
    """What a run over ``n_chars`` characters of text with ``n_models`` models may write (cache and outputs)."""
    return int(n_chars * max(1, n_models) * BYTES_PER_CHAR_PER_MODEL) + MIN_FREE_BYTES


def _blocking_file(path: Path) -> Path | None:
    """``path`` itself or its nearest existing ancestor, when that is not a directory."""
    p = path
    while True:
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
        if p.parent == p:
            return None
        p = p.parent


def check_location(path: str | os.PathLike, what: str, need_bytes: int = 0) -> Path:
    """Make ``path`` (a directory), prove it takes a file (write, fsync, delete a probe), and that its
    disk has ``need_bytes`` free. Raises a one-line :class:`OutputError` naming ``what``."""
    path = Path(path).expanduser()
    block = _blocking_file(path)
    if block is not None:
        where = "is a file" if block == path else f"is under {block}, which is a file"
        raise OutputError(f"{what} {path} {where}; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access is not enough: root passes it on read-only mounts, and ACLs or quotas fail only on write
        fd, probe = tempfile.mkstemp(dir=path, prefix=".memlens-probe-")
        try:
            os.write(fd, b"memlens")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    if need_bytes:
        free = shutil.disk_usage(path).free
        if free < need_bytes:
            raise OutputError(f"{what} {path} has {free / 2**20:.0f} MiB free; this run needs about {need_bytes / 2**20:.0f} MiB: "
                              "free some space or choose another location")
    return path


def preflight(out: str | os.PathLike | None, cache_root: str | os.PathLike | None, n_chars: int, n_models: int) -> None:
    """Check the output directory and the cache root before any work (see the module's docstring)."""
    need = estimate_bytes(n_chars, n_models)
    if cache_root is not None:
        check_location(cache_root, "the cache directory", need)
    if out is not None:
        check_location(out, "the output directory --out", need if cache_root is None else MIN_FREE_BYTES)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _write_one(write: Callable[[Path], Any], path: Path) -> None:
    write(path)


def _write_chains(writers: Mapping[str, Callable[[Path], Any]], chains: list[list[str]], staging: Path) -> None:
    """Each chain on a thread of its own; waits for all of them (the staging directory is removed only
    after), then raises the first chain's error."""
    if not chains:
        return
    from concurrent.futures import ThreadPoolExecutor, wait

    def run(chain: list[str]) -> None:
        for name in chain:
            _write_one(writers[name], staging / name)

    with ThreadPoolExecutor(len(chains), thread_name_prefix="memlens-write") as pool:
        futures = [pool.submit(run, c) for c in chains]
        wait(futures)
    for f in futures:
        f.result()


def write_set(out: str | os.PathLike, writers: Mapping[str, Callable[[Path], Any]], info: Mapping[str, Any] | None = None, *,
              concurrent: Sequence[Sequence[str]] = ()) -> Path:
    """Write an output set into ``out``: ``writers`` maps each file name (one of :data:`OWNED`) to a
    function that writes that file at the path it is given. ``info`` goes into the manifest (e.g. the
    command and its attacks).

    ``concurrent``: chains of file names, each chain written in its order on a thread of its own, all
    chains at once (pyarrow, pandas' CSV writer and file I/O release the GIL); the files in no chain
    are written afterwards, in order, on this thread (e.g. results.json, whose timings cover the rest)."""
    out = Path(out)
    unknown = sorted(set(writers) - set(OWNED))
    if unknown:
        raise ValueError(f"not an output of an audit: {', '.join(unknown)}")
    check_location(out, "the output directory")
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        chains = [[n for n in chain if n in writers] for chain in concurrent]
        chains = [c for c in chains if c]
        _write_chains(writers, chains, staging)
        chained = {n for c in chains for n in c}
        for name, write in writers.items():
            if name not in chained:
                _write_one(write, staging / name)
        for name in writers:
            if not (staging / name).is_file():
                raise RuntimeError(f"the writer of {name} wrote nothing")
        manifest = {"run_id": uuid.uuid4().hex, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **dict(info or {}), "files": {name: _entry(staging / name) for name in writers}}
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2))
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise OutputError(f"cannot write the outputs in {out}: {why}; the files already there are unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Renames within one directory: no new space needed. The manifest goes first, so a kill between
    # the renames leaves a set that does not match it (refused by verify_set), never a silent mix.
    os.replace(staging / MANIFEST, out / MANIFEST)
    for name in writers:
        os.replace(staging / name, out / name)
    for name in OWNED:
        if name not in writers:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()  # an earlier run's file that no longer matches results.json
    shutil.rmtree(staging, ignore_errors=True)
    return out


def read_manifest(d: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(d) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(m.get("files"), dict):
            raise ValueError("no files")
        return m
    except (ValueError, AttributeError) as e:
        raise DataError(f"{p} is damaged ({e}); rerun the audit") from None


def verify_set(d: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``d`` after checking that every file it lists is there unchanged and that no
    other audit output lies beside them; None for a directory without a manifest. One-line DataError."""
    d = Path(d)
    m = read_manifest(d)
    if m is None:
        return None
    hint = "the outputs are not one run's (interrupted, or changed since); rerun the audit"
    for name, e in m["files"].items():
        if name in DERIVED:
            continue
        p = d / name
        if not p.is_file():
            raise DataError(f"{p} is missing but listed in {MANIFEST}: {hint}")
        if p.stat().st_size != e.get("size") or sha256_file(p) != e.get("sha256"):
            raise DataError(f"{p} does not match {MANIFEST}: {hint}")
    extra = [n for n in OWNED if n not in m["files"] and n not in DERIVED and (d / n).is_file()]
    if extra:
        raise DataError(f"{d / extra[0]} is not listed in {MANIFEST}: {hint}")
    return m


def add_to_set(d: str | os.PathLike, name: str) -> None:
    """Record a file rewritten in place (``memlens report`` rebuilding report.html) in the manifest,
    when there is one."""
    d = Path(d)
    m = read_manifest(d)
    if m is None:
        return
    m["files"][name] = _entry(d / name)
    atomic_write(d / MANIFEST, json.dumps(m, indent=2))
