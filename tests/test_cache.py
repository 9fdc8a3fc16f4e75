"""The on-disk statistics cache: hits, misses, resume after an interrupted run, corrupt shards,
atomic writes."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import memlens
from memlens.cache import CacheNamespace, StatsCache, _atomic_write, _records_to_table, _table_to_records, key_hash, text_hash
from memlens.models.causal import CausalScorer
from memlens.models.handle import ModelHandle
from memlens.passes.causal import PassSettings, compute_stats
from memlens.stats import TOKEN_FIELDS

TEXTS = [
    "Amber stone by the river, code 101.",
    "Copper harbor lantern.",
    "The willow and the cedar and the quarry falcon went to the meadow.",
    "Velvet walnut ✓ café.",
    "Juniper tundra canyon.",
]


@pytest.fixture
def handles(gpt2, gpt2_ref):
    """Handles on the saved directories (weights load lazily, only when a model must run)."""
    return ModelHandle(str(gpt2.path)), ModelHandle(str(gpt2_ref.path))


@pytest.fixture
def spy(monkeypatch):
    """Records the texts every CausalScorer.score call receives."""
    calls: list[list[str]] = []
    orig = CausalScorer.score

    def score(self, texts, on_batch_done=None, **kw):
        calls.append(list(texts))
        return orig(self, texts, on_batch_done=on_batch_done, **kw)

    monkeypatch.setattr(CausalScorer, "score", score)
    return calls


def no_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model ran on a cache hit")

    monkeypatch.setattr(CausalScorer, "__init__", boom)
    monkeypatch.setattr("memlens.models.handle.load_model", boom)


def settings(**kw) -> PassSettings:
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 2)
    return PassSettings(**kw)


def assert_bundles_equal(a, b):
    assert len(a.target) == len(b.target)
    for x, y in zip(a.target, b.target):
        for k in TOKEN_FIELDS:
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)
    for ra, rb in zip(a.references, b.references):
        for x, y in zip(ra.stats, rb.stats):
            np.testing.assert_array_equal(x.logprob, y.logprob)
    if a.comparison is not None:
        for x, y in zip(a.comparison.log_ratio, b.comparison.log_ratio):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(a.comparison.kl, b.comparison.kl):
            np.testing.assert_array_equal(x, y)


def shards(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_cache_hit_runs_no_model(handles, tmp_path, monkeypatch):
    t, r = handles
    first = compute_stats(t, [r], TEXTS, StatsCache(tmp_path), settings())
    assert first.computed == len(TEXTS)
    assert shards(tmp_path)
    no_model(monkeypatch)
    t2, r2 = ModelHandle(str(t.spec.path)), ModelHandle(str(r.spec.path))  # fresh process, fresh handles
    second = compute_stats(t2, [r2], TEXTS, StatsCache(tmp_path), settings(batch_size=5))
    assert second.computed == 0
    assert t2._model is None and r2._model is None  # weights never loaded
    assert_bundles_equal(first, second)


def test_cache_miss_computes_only_new_texts(handles, tmp_path, spy):
    t, r = handles
    compute_stats(t, [r], TEXTS[:3], StatsCache(tmp_path), settings())
    spy.clear()
    b = compute_stats(t, [r], TEXTS, StatsCache(tmp_path), settings())
    assert b.computed == 2
    assert sorted(sum(spy, [])) == sorted(TEXTS[3:])
    assert len(b.target) == len(TEXTS)


def test_duplicate_texts_are_scored_once(handles, tmp_path, spy):
    t, _ = handles
    b = compute_stats(t, [], [TEXTS[0], TEXTS[1], TEXTS[0]], StatsCache(tmp_path), settings())
    assert b.computed == 2
    np.testing.assert_array_equal(b.target[0].logprob, b.target[2].logprob)


def test_settings_change_the_key(handles, tmp_path):
    t, _ = handles
    cache = StatsCache(tmp_path)
    assert compute_stats(t, [], TEXTS, cache, settings()).computed == len(TEXTS)
    assert compute_stats(t, [], TEXTS, cache, settings(batch_size=1)).computed == 0  # batch size is not in the key
    assert compute_stats(t, [], TEXTS, cache, settings(max_length=8, stride=4)).computed == len(TEXTS)


def test_temperature_changes_only_the_pair_key(handles, tmp_path):
    t, r = handles
    cache = StatsCache(tmp_path)
    a = compute_stats(t, [r], TEXTS, cache, settings())
    b = compute_stats(t, [r], TEXTS, cache, settings(temperature=2.0))
    assert b.computed == len(TEXTS)
    for x, y in zip(a.target, b.target):  # single-model stats do not depend on the temperature
        np.testing.assert_array_equal(x.logprob, y.logprob)
    assert not np.allclose(a.comparison.kl[0], b.comparison.kl[0])


def test_audit_second_run_hits_the_cache(gpt2, gpt2_ref, tmp_path, monkeypatch):
    kw = dict(members=TEXTS[:3], nonmembers=TEXTS[3:], attacks=["loss", "mink", "ref", "informia_token"],
              cache_dir=tmp_path, n_bootstrap=0, progress=False, device="cpu")
    first = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], **kw)
    no_model(monkeypatch)
    second = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], **kw)
    for a in ("loss", "mink", "ref", "informia_token"):
        np.testing.assert_array_equal(first.scores[a], second.scores[a])


def _interrupt_after(monkeypatch, n_batches: int) -> list[str]:
    """Make the scorer die (like Ctrl-C) right after its n-th batch was handed to the cache.
    Returns the list the finished texts are appended to."""
    orig = CausalScorer.score
    finished: list[str] = []

    def score(self, texts, on_batch_done=None, **kw):
        seen = [0]

        def cb(done):
            on_batch_done(done)
            finished.extend(texts[j] for j in done)
            seen[0] += 1
            if seen[0] == n_batches:
                raise KeyboardInterrupt

        return orig(self, texts, on_batch_done=cb, **kw)

    monkeypatch.setattr(CausalScorer, "score", score)
    return finished


@pytest.mark.parametrize("flush_every", [1, 100])
def test_resume_after_interrupted_run(handles, tmp_path, monkeypatch, spy, flush_every):
    t, r = handles
    clean = compute_stats(t, [r], TEXTS, StatsCache(tmp_path / "clean"), settings(batch_size=1))
    with monkeypatch.context() as m:
        finished = _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            compute_stats(t, [r], TEXTS, StatsCache(tmp_path / "c"), settings(batch_size=1, flush_every=flush_every))
    # Whatever finished was written (flush_every=1 writes each text as it finishes; otherwise
    # the interrupted run flushes on the way out); nothing half-written is left.
    assert shards(tmp_path / "c")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name.startswith(".tmp")]
    spy.clear()
    resumed = compute_stats(t, [r], TEXTS, StatsCache(tmp_path / "c"), settings(batch_size=1))
    assert resumed.computed == len(TEXTS) - 2
    assert len(finished) == 2
    assert sorted(sum(spy, [])) == sorted(set(TEXTS) - set(finished))  # only the missing texts ran
    assert_bundles_equal(clean, resumed)


def test_kill_between_flushes_keeps_earlier_shards(handles, tmp_path, monkeypatch):
    """A hard kill (no cleanup) after some shards were written: those texts are not recomputed."""
    t, _ = handles
    import memlens.passes._shared as pl

    orig_flush = pl.Flusher.flush
    n = [0]

    def flush(self):
        if any(self.buf):
            n[0] += 1
            if n[0] >= 3:  # the process is gone: no later flush either
                raise SystemExit("killed")  # dies instead of writing the third shard
        orig_flush(self)

    with monkeypatch.context() as m:
        m.setattr(pl.Flusher, "flush", flush)
        with pytest.raises(SystemExit):
            compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings(batch_size=1, flush_every=1))
    assert len(shards(tmp_path)) == 2
    assert compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings()).computed == len(TEXTS) - 2


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_shard_is_quarantined_and_recomputed(handles, tmp_path, caplog):
    t, _ = handles
    clean = compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings(flush_every=2))
    files = shards(tmp_path)
    assert len(files) >= 2
    bad = files[0]
    _corrupt(bad)
    with caplog.at_level(logging.WARNING, logger="memlens"):
        again = compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings())
    assert any("not used" in r.getMessage() and bad.name in r.getMessage() for r in caplog.records)
    assert bad.with_suffix(".corrupt").exists()  # kept for inspection, never deleted
    for p in shards(tmp_path):  # recomputed texts went to a new, valid shard (the same name if the same bytes)
        assert hashlib.sha256(p.read_bytes()).hexdigest()[:32] == p.stem
    assert 0 < again.computed < len(TEXTS)
    assert_bundles_equal(clean, again)
    # the third run reads only healthy shards: no warning, nothing computed
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memlens"):
        assert compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings()).computed == 0
    assert not caplog.records


def test_unreadable_shard_with_valid_checksum_is_quarantined(tmp_path, caplog):
    import hashlib

    ns = CacheNamespace(tmp_path, {"k": 1})
    ns.dir.mkdir(parents=True)
    junk = b"this is not parquet"
    p = ns.dir / f"{hashlib.sha256(junk).hexdigest()[:32]}.parquet"
    p.write_bytes(junk)
    with caplog.at_level(logging.WARNING, logger="memlens"):
        assert ns.missing(["abc"]) == ["abc"]
    assert "cannot be read" in caplog.text
    assert p.with_suffix(".corrupt").exists()


def test_leftover_temp_file_is_ignored(tmp_path, caplog):
    """A run killed mid-write leaves a .tmp-* file: it is neither read nor reported as corrupt."""
    ns = CacheNamespace(tmp_path, {"k": 1})
    ns.put({"h1": {"logprob": np.array([-1.0, -2.0], dtype=np.float32)}})
    stale = ns.dir / ".tmp-abcdef.parquet"
    stale.write_bytes(b"half a parquet fi")
    fresh = CacheNamespace(tmp_path, {"k": 1})
    with caplog.at_level(logging.WARNING, logger="memlens"):
        assert list(fresh.get(["h1"])) == ["h1"]
    assert not caplog.records
    assert stale.exists()


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.parquet"

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _atomic_write(target, b"data" * 100)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "x.bin"
    _atomic_write(target, b"old contents, long")
    _atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_failed_shard_write_leaves_no_file(handles, tmp_path, monkeypatch):
    t, _ = handles
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings())
    assert shards(tmp_path) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".tmp")]


def test_shard_names_are_checksums_and_key_is_written(handles, tmp_path):
    import hashlib
    import json

    t, _ = handles
    compute_stats(t, [], TEXTS, StatsCache(tmp_path), settings())
    for p in shards(tmp_path):
        assert hashlib.sha256(p.read_bytes()).hexdigest()[:32] == p.stem
        key = json.loads((p.parent / "key.json").read_text())
        assert key_hash(key) == p.parent.name
        assert key["model"] == t.fingerprint


def test_records_round_trip():
    recs = {
        "a": {"logprob": np.array([-1.5, -0.25], dtype=np.float32), "rank": np.array([1, 7], dtype=np.int64),
              "feat": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "b": {"logprob": np.zeros(0, dtype=np.float32), "rank": np.zeros(0, dtype=np.int64),
              "feat": np.zeros((0, 3), dtype=np.float32)},
        "c": {"logprob": np.array([-3.0], dtype=np.float32), "rank": np.array([2], dtype=np.int64),
              "feat": np.ones((1, 3), dtype=np.float32)},
    }
    back = _table_to_records(_records_to_table(recs))
    assert set(back) == set(recs)
    for h, rec in recs.items():
        for k, v in rec.items():
            assert back[h][k].dtype == v.dtype
            assert back[h][k].shape == v.shape
            np.testing.assert_array_equal(back[h][k], v)


def test_in_memory_cache_writes_nothing(handles, tmp_path, monkeypatch):
    t, _ = handles
    monkeypatch.chdir(tmp_path)
    cache = StatsCache(None)
    assert compute_stats(t, [], TEXTS, cache, settings()).computed == len(TEXTS)
    assert compute_stats(t, [], TEXTS, cache, settings()).computed == 0
    assert not list(tmp_path.iterdir())


def test_text_hash_is_content_address():
    assert text_hash("abc") == text_hash("abc") != text_hash("abc ")
    assert key_hash({"a": 1, "b": 2}) == key_hash({"b": 2, "a": 1})


def test_a_shard_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    """Reading a namespace verifies each shard's SHA-256 once: later reads (other processes: fresh
    namespaces) trust the shard while its size and modification time are those it was verified with."""
    import memlens.cache as mc

    key = {"kind": "test-memo"}
    ns = CacheNamespace(tmp_path, key)
    for i in range(3):
        ns.put({f"h{i}": {"x": np.arange(i + 1, dtype=np.float32)}})
    hashed: list[int] = []
    real = hashlib.sha256

    def counting(data=b""):
        if bytes(data[:4]) == b"PAR1":  # a Parquet file (the patch is global: key hashes pass here too)
            hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(mc.hashlib, "sha256", counting)

    def read_fresh() -> dict:
        mc._MEMOS.clear()  # as in a new process: the memo comes from its file
        return CacheNamespace(tmp_path, key).get(["h0", "h1", "h2"])

    assert sorted(read_fresh()) == ["h0", "h1", "h2"] and len(hashed) == 3
    assert (tmp_path / mc.VERIFIED_MEMO).is_file()
    hashed.clear()
    got = read_fresh()
    assert hashed == [] and sorted(got) == ["h0", "h1", "h2"]
    np.testing.assert_array_equal(got["h2"]["x"], np.arange(3, dtype=np.float32))
    changed = shards(tmp_path)[0]
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: verified again
    read_fresh()
    assert len(hashed) == 1
    mc.clear_cache(tmp_path)
    assert not (tmp_path / mc.VERIFIED_MEMO).exists()


def test_index_answers_without_reading_and_a_shard_gone_after_indexing_is_a_clear_error(tmp_path):
    from memlens.errors import CacheMissError
    from memlens.passes.causal import _read

    key = {"kind": "test-index"}
    ns = CacheNamespace(tmp_path, key)
    ns.put({"h1": {"x": np.arange(3, dtype=np.float32)}})
    ns.put({"h2": {"x": np.arange(2, dtype=np.float32)}})
    fresh = CacheNamespace(tmp_path, key)  # another process: indexes the shards (their text_hash column only)
    assert fresh.missing(["h1", "h2", "h3"]) == ["h3"] and fresh._mem == {}
    where = fresh.shards(["h1", "h2"])
    assert where["h1"] != where["h2"] and all(where.values())
    np.testing.assert_array_equal(fresh.get(["h2"])["h2"]["x"], np.arange(2, dtype=np.float32))
    assert fresh._mem == {}  # read, not kept
    (fresh.dir / where["h1"]).unlink()  # e.g. `memlens cache clear` meanwhile
    with pytest.raises(CacheMissError, match="1 texts could not be read back"):
        _read(fresh, ["h1", "h2"])
    assert fresh.missing(["h1"]) == ["h1"]  # counted as missing from then on: a rerun recomputes it
