"""Issue 12, item 13: the cache keeps the token ids of every audited text until removed; cache_info and
clear_cache (``memlens cache info|clear [--older-than]``) show and remove it, safely beside running audits."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from memlens.cache import CacheNamespace, StatsCache, cache_info, clear_cache, parse_duration

DAY = 86400.0


def _rec(n: int) -> dict:
    return {"logprob": np.arange(n, dtype=np.float32), "token_ids": np.arange(n, dtype=np.int64)}


def _age(path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


@pytest.fixture
def filled(tmp_path):
    root = tmp_path / "cache"
    c = StatsCache(root)
    a = c.namespace({"kind": "causal", "model": "a"})
    a.put({"h1": _rec(3)})
    a.put({"h2": _rec(4)})
    b = c.namespace({"kind": "causal-pair", "model": "b"})
    b.put({"h3": _rec(5)})
    old = sorted(a.dir.glob("*.parquet"))[0]
    _age(old, 40)
    return root, a, b, old


def test_parse_duration():
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 90 * 60
    assert parse_duration("2w") == 14 * DAY
    assert parse_duration("7") == 7 * DAY
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_info_counts_namespaces_shards_size_and_ages(filled):
    root, a, b, old = filled
    info = cache_info(root)
    assert info.exists and info.namespaces == 2 and info.shards == 3
    assert info.size_bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert info.kinds == {"causal": 1, "causal-pair": 1}
    assert info.oldest == pytest.approx(old.stat().st_mtime) and info.newest > info.oldest + 39 * DAY
    assert not cache_info(root / "nowhere").exists


def test_clear_older_than_removes_only_old_shards(filled):
    root, a, b, old = filled
    res = clear_cache(root, older_than=parse_duration("30d"))
    assert res.files == 1 and not old.exists()
    assert cache_info(root).shards == 2
    # a fresh reader of that namespace still has the newer shard and recomputes only the old text
    ns = CacheNamespace(root, a.key)
    assert ns.missing(["h1", "h2"]) == ["h1"]


def test_clear_all_removes_shards_keys_and_namespaces_but_nothing_foreign(filled):
    root, a, b, old = filled
    (root / "notes.txt").write_text("mine")
    (root / "file-hashes.json").write_text("{}")
    (root / "blind").mkdir()
    (root / "blind" / "0123abcd.json").write_text('{"scores": [0.5], "folds": 2}')  # the blind baseline's cached scores
    assert cache_info(root).namespaces == 2  # the blind folder is no namespace
    res = clear_cache(root)
    assert res.namespaces == 2 and res.files == 3 + 2 + 1 + 1  # shards, key.json files, the hash memo, the blind entry
    assert cache_info(root).shards == 0
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def test_clear_leaves_a_write_in_progress_alone(filled):
    root, a, b, old = filled
    fresh = a.dir / ".tmp-abc.parquet"  # a running audit writing a shard right now
    fresh.write_bytes(b"partial")
    stale = b.dir / ".tmp-old.parquet"  # left by a run killed two days ago
    stale.write_bytes(b"partial")
    _age(stale, 2)
    clear_cache(root)
    assert fresh.exists() and not stale.exists()
    assert a.dir.is_dir() and not b.dir.exists()


def test_a_writer_whose_namespace_was_cleared_writes_again(filled):
    root, a, b, old = filled
    clear_cache(root)
    assert not a.dir.exists()
    a.put({"h9": _rec(2)})  # the same process keeps auditing after a concurrent clear
    assert (a.dir / "key.json").is_file()
    assert CacheNamespace(root, a.key).missing(["h9"]) == []


def test_a_reader_that_loses_a_shard_mid_read_recomputes(filled, monkeypatch):
    root, a, b, old = filled
    ns = CacheNamespace(root, a.key)
    real_glob = type(ns.dir).glob

    def glob_then_clear(self, pattern):
        found = list(real_glob(self, pattern))
        if pattern == "*.parquet" and self == ns.dir:
            for p in found:
                p.unlink()  # removed by a concurrent `memlens cache clear` between listing and reading
        return found

    monkeypatch.setattr(type(ns.dir), "glob", glob_then_clear)
    assert sorted(ns.missing(["h1", "h2"])) == ["h1", "h2"]
