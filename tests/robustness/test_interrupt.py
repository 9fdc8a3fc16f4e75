"""Issue 12, item 7: SIGTERM is handled like Ctrl-C (what is scored is written, exit 143, the resume
message), and a flush of the paired pass is one unit: a signal inside it takes effect after every
namespace's shard is written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memlens.cache import StatsCache
from memlens.passes._shared import Flusher

ROOT = Path(__file__).resolve().parents[2]


def _rec(n: int) -> dict:
    return {"logprob": np.arange(n, dtype=np.float32), "token_ids": np.arange(n, dtype=np.int64)}


def test_a_signal_inside_a_flush_waits_for_every_namespace(tmp_path, monkeypatch):
    cache = StatsCache(tmp_path)
    target, ref, pair = (cache.namespace({"kind": k}) for k in ("causal-t", "causal-r", "causal-pair"))
    real_put = type(target).put

    def put_then_interrupt(self, records):
        real_put(self, records)
        if self is target:  # Ctrl-C right after the target's shard: between the namespaces of one unit
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs at the next bytecode: a real signal lands inside the flush

    monkeypatch.setattr(type(target), "put", put_then_interrupt)
    fl = Flusher([target, ref, pair], every=100, background=False)  # the writes on the main thread, where signals land
    fl.add([{"h1": _rec(3)}, {"h1": _rec(3)}, {"h1": {"log_ratio": np.zeros(3, dtype=np.float32)}}])
    with pytest.raises(KeyboardInterrupt):
        fl.flush()
    for ns in (target, ref, pair):
        assert len(list(ns.dir.glob("*.parquet"))) == 1, ns.key  # all three written before the interrupt


def _write_texts(path: Path, texts: list[str]) -> None:
    path.write_text("\n".join(texts) + "\n")


@pytest.mark.slow
def test_sigterm_writes_what_is_scored_and_exits_143(gpt2, gpt2_ref, corpus, tmp_path):
    texts = [f"{t} #{i}" for i, t in enumerate(corpus * 12)]  # 960 texts: far more than scored before the signal
    _write_texts(tmp_path / "m.txt", texts[::2])
    _write_texts(tmp_path / "n.txt", texts[1::2])
    cmd = [sys.executable, "-m", "memlens", "audit", "--target", str(gpt2.path), "--reference", str(gpt2_ref.path),
           "--members", str(tmp_path / "m.txt"), "--nonmembers", str(tmp_path / "n.txt"), "--attacks", "loss,ref",
           "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--batch-size", "1",
           "--bootstrap", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TERM": "dumb"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and "tok/s" not in "".join(err):
        time.sleep(0.2)  # until the "scoring" bar shows tokens being scored
    time.sleep(2.0)
    assert proc.poll() is None, "".join(err)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    reader.join(timeout=10)
    text = "".join(err)
    assert rc == 143, text
    assert "run the same command again to resume" in text
    shards = {d.name: list(d.glob("*.parquet")) for d in (tmp_path / "cache").iterdir() if d.is_dir()}
    # target, reference, pair written as one unit per flush: each namespace has the same number of shards (one
    # flush, or more when a fast machine scored more than a flush's worth of texts before the signal)
    assert len(shards) == 3 and len({len(v) for v in shards.values()}) == 1 and all(shards.values()), shards
    assert not (tmp_path / "out" / "results.json").exists()
