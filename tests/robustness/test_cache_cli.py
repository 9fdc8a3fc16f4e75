"""Issue 12, item 13 (command line): ``memlens cache info|clear [--older-than] [--cache-dir]``."""
from __future__ import annotations

import os
import time

import numpy as np
from typer.testing import CliRunner

from memlens.cache import StatsCache
from memlens.cli import app

runner = CliRunner()


def _filled(root):
    c = StatsCache(root)
    a = c.namespace({"kind": "causal", "model": "a"})
    a.put({"h1": {"token_ids": np.arange(3, dtype=np.int64)}})
    a.put({"h2": {"token_ids": np.arange(4, dtype=np.int64)}})
    old = sorted(a.dir.glob("*.parquet"))[0]
    t = time.time() - 40 * 86400
    os.utime(old, (t, t))
    c.namespace({"kind": "causal-pair", "model": "b"}).put({"h3": {"token_ids": np.arange(5, dtype=np.int64)}})
    return old


def test_cache_info(tmp_path):
    _filled(tmp_path / "c")
    r = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "in 3 shards of 2 namespaces (causal 1, causal-pair 1)" in r.output and "token ids of every text" in r.output
    r = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "none")])
    assert r.exit_code == 0 and "no cache" in r.output


def test_cache_clear_older_than_then_all(tmp_path):
    old = _filled(tmp_path / "c")
    r = runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path / "c"), "--older-than", "30d"])
    assert r.exit_code == 0 and "removed 1 files" in r.output, r.output
    assert not old.exists() and len(list((tmp_path / "c").rglob("*.parquet"))) == 2
    r = runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0 and "2 namespaces emptied" in r.output, r.output
    assert not list((tmp_path / "c").rglob("*.parquet"))


def test_cache_default_dir_and_bad_duration(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMLENS_CACHE", str(tmp_path / "env-cache"))
    _filled(tmp_path / "env-cache")
    r = runner.invoke(app, ["cache", "info"])
    assert r.exit_code == 0 and "3 shards" in r.output
    r = runner.invoke(app, ["cache", "clear", "--older-than", "soon"])
    assert r.exit_code == 2 and "not a duration: 'soon'" in r.output
    assert len(list((tmp_path / "env-cache").rglob("*.parquet"))) == 3
