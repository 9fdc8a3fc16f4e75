"""Small file helpers every writer shares: atomic writes, the canonical JSON hash, JSON lines.

Atomic: a file is written under a temporary name in its own directory and renamed into place
(``os.replace``), so a killed run never leaves a half-written file where a reader (a resumed run,
the cache) would take it for a whole one. Temporary names start with :data:`TMP_PREFIX`, which
readers of a directory (the cache) skip.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an error, removed otherwise. For writers that want a file name (parquet, safetensors)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = True) -> Path:
    """Write ``data`` (text is UTF-8 encoded, no newline translation) to ``path`` atomically.
    ``fsync``: flush to disk before the rename, so a crash cannot leave an empty file under the name."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def json_hash(obj: Any, length: int | None = None) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys; non-JSON values by ``str``),
    cut to ``length`` characters. Cache keys and run keys depend on these exact bytes."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest if length is None else digest[:length]


def jsonl_text(records: Iterable[dict], default: Any = None) -> str:
    """Records one per line; no ASCII escaping, keys in the records' own order, so the same
    records always give the same bytes (the testbed's determinism tests compare files)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in records)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict], *, default: Any = None) -> Path:
    """Write records as JSON lines, atomically."""
    return atomic_write(path, jsonl_text(records, default=default), fsync=False)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def worker_process(module: str, **popen: Any):
    """``python -m module`` as a child process with pipes on stdin and stdout (memlens' own workers: the blind
    baseline, the tokenizer), able to import this very memlens (its source root put first on PYTHONPATH).

    A plain child process, not multiprocessing's "spawn": spawn re-imports the parent's main script in the
    child, and a user's script that calls memlens.audit without an ``if __name__ == "__main__"`` guard would
    then run again there. ``popen``: further subprocess.Popen keywords (``env`` is merged into os.environ)."""
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **popen.pop("env", {})}
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, **popen)
