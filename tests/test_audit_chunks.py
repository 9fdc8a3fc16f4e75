"""Above one chunk of texts the attacks run a chunk at a time (memory holds one chunk's statistics; the
token-level results go to disk as they come): every output equals the audit that held every text at once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import memlens
from memlens.passes.causal import PassSettings
from memlens.token_file import StoredColumn


def _texts(corpus):
    return corpus + [f"{a} {b}" for a, b in zip(corpus, corpus[1:])]


def _audit(gpt2, gpt2_ref, corpus, cache, chunk, **kw):
    texts = _texts(corpus)
    members = [{"text": t, "pii": [{"start": 0, "end": 5}]} if i % 3 == 0 else t for i, t in enumerate(texts[:60])]
    members.append(texts[0] + " again")  # a text twice below: the same statistics at two positions
    nonmembers = texts[60:120] + [texts[0] + " again"]
    # every causal attack (ltmia too: the paired pass's per-text records, chunk by chunk), and one over the pii
    # spans only (cut per chunk; the texts without one are counted over the chunks in a note)
    kw.setdefault("attacks", ["loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token", "ltmia"])
    kw.setdefault("attack_params", {"mink": {"span": "pii"}})
    return memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], members=members[:-1] + [texts[0] + " again!"],
                         nonmembers=nonmembers, population=texts[120:150], cache_dir=cache, n_bootstrap=20,
                         pass_settings=PassSettings(attack_chunk=chunk, progress=False, flush_every=16), **kw)


@pytest.fixture(scope="module")
def pair(gpt2, gpt2_ref, corpus, tmp_path_factory):
    cache = tmp_path_factory.mktemp("chunk-cache")
    whole = _audit(gpt2, gpt2_ref, corpus, cache, chunk=10_000, blind=False)
    chunked = _audit(gpt2, gpt2_ref, corpus, cache, chunk=7, blind=False)
    return whole, chunked


def test_chunked_attacks_give_the_same_scores_metrics_and_infos(pair):
    whole, chunked = pair
    assert whole.token_store is None and chunked.token_store is not None
    assert "texts: cache read (chunk by chunk, beside the attacks)" in chunked.timings and "texts: cache read" in whole.timings
    # exactly the same numbers; ltmia's to float32 tolerance (its torch classifier runs on other batches per chunk)
    exact = [c for c in whole.scores.columns if c != "ltmia"]
    pd.testing.assert_frame_equal(whole.scores[exact], chunked.scores[exact], check_exact=True)
    np.testing.assert_allclose(whole.scores["ltmia"], chunked.scores["ltmia"], rtol=1e-5, atol=1e-6)
    assert whole.metrics.keys() == chunked.metrics.keys()
    for name in whole.metrics:
        assert whole.metrics[name].to_dict() == chunked.metrics[name].to_dict()
    assert whole.attack_info == chunked.attack_info
    assert "reference_weight_median" in whole.attack_info["rmia"]  # joined over the chunks (finish_info), not the first chunk's
    assert whole.extra == chunked.extra  # leak threshold, token scales and slider ranges
    assert whole.notes == chunked.notes
    assert any("audited texts have no 'pii' spans" in n for n in whole.notes)
    assert np.isfinite(whole.scores["ltmia"]).all() and np.isnan(whole.scores["mink"]).sum() == 102  # 20 of 122 have pii spans


def test_chunked_token_results_read_back_from_the_store(pair):
    whole, chunked = pair
    assert set(whole.token_scores) == set(chunked.token_scores) == {"minkpp", "informia_token"}
    for name, toks in chunked.token_scores.items():
        assert isinstance(toks, StoredColumn) and len(toks) == len(whole.samples)
        as_list = list(toks)  # one read of the column
        for i in (0, 5, len(toks) - 1):  # one text: its row group
            np.testing.assert_array_equal(toks[i], np.float32(whole.token_scores[name][i]))
        for a, b in zip(as_list, whole.token_scores[name]):
            np.testing.assert_array_equal(a, np.float32(b))
    for i in (0, 17, len(whole.samples) - 1):
        w, c = whole.target_stats[i], chunked.target_stats[i]
        for f in ("token_ids", "logprob", "entropy", "mean_logp", "std_logp", "rank", "span_start", "span_end"):
            np.testing.assert_array_equal(getattr(w, f), getattr(c, f))
        assert chunked.token_strings[i] == whole.token_strings[i]
        np.testing.assert_array_equal(chunked.reference_logprobs[i], whole.reference_logprobs[i])
    assert [len(s) for s in chunked.target_stats] == [len(s) for s in whole.target_stats]


def test_chunked_outputs_hold_the_same_rows_and_the_same_report_data(pair, tmp_path):
    from memlens.report.html import SavedAudit, load_saved

    whole, chunked = pair
    whole.save(tmp_path / "w", report=False)
    chunked.save(tmp_path / "c", report=False)
    w = pq.read_table(tmp_path / "w" / "token_scores.parquet").to_pylist()
    c = pq.read_table(tmp_path / "c" / "token_scores.parquet").to_pylist()
    # the chunked file's rows are in the order the chunks ran (cache shards of 16 texts, written longest text first;
    # find a text by id); the same rows
    assert sorted(r["id"] for r in c) == sorted(r["id"] for r in w) and [r["id"] for r in c] != [r["id"] for r in w]
    assert {r["id"]: r for r in c} == {r["id"]: r for r in w}
    assert (tmp_path / "w" / "texts.jsonl").read_bytes() == (tmp_path / "c" / "texts.jsonl").read_bytes()
    sw, sc = (pd.read_csv(tmp_path / d / "scores.csv") for d in ("w", "c"))
    pd.testing.assert_frame_equal(sw.drop(columns="ltmia"), sc.drop(columns="ltmia"), check_exact=True)
    rw, rc = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("w", "c"))
    for k in ("metrics", "attack_info", "notes", "leak_threshold", "token_scales", "token_ranges"):
        assert rw[k] == rc[k]
    # the report's data from memory (the store's rows for the chunked result) equals the saved files'
    for result, d in ((whole, "w"), (chunked, "c")):
        mem, disk = SavedAudit.from_result(result), load_saved(tmp_path / d)
        assert set(mem.tokens) == set(disk.tokens)
        for tid in list(disk.tokens)[:5]:
            for col, v in disk.tokens[tid].items():
                np.testing.assert_array_equal(mem.tokens[tid][col], v)


def test_a_chunked_result_saves_redacted_without_its_store(gpt2, gpt2_ref, corpus, tmp_path):
    res = _audit(gpt2, gpt2_ref, corpus, tmp_path / "cache", chunk=7, blind=False)
    res.save(tmp_path / "out", report=True, redact=True)
    saved = tmp_path / "out" / "token_scores.parquet"
    assert saved.stat().st_ino != res.token_store.path.stat().st_ino  # written anew, not the store linked
    rows = {r["id"]: r for r in pq.read_table(saved).to_pylist()}
    assert len(rows) == len(res.samples)
    with_pii = [s for s in res.samples if s.meta.get("pii")]
    assert len(with_pii) == 20
    for s in with_pii:  # the secret (the text's first five characters) became a placeholder in the tokens
        row = rows[s.id]
        assert "".join(row["tokens"]).startswith("[") and not "".join(row["tokens"]).startswith(s.text[:5])
        assert row["token_ids"][0] == -1


def test_the_store_is_removed_with_its_result(gpt2, gpt2_ref, corpus, tmp_path):
    import gc

    res = _audit(gpt2, gpt2_ref, corpus, tmp_path / "cache", chunk=7, blind=False)
    path = res.token_store.path
    assert path.is_file() and path.parent == tmp_path / "cache" / "token-spill"
    res.save(tmp_path / "out", report=False)
    del res
    gc.collect()
    assert not path.exists() and (tmp_path / "out" / "token_scores.parquet").is_file()  # the saved file is its own


def test_attacks_that_need_every_text_keep_the_whole_set(gpt2, gpt2_ref, corpus, tmp_path):
    from memlens.attacks import get_attack

    assert not get_attack("rmia").runs_per_text({"tune_a": True}) and get_attack("rmia").runs_per_text({})
    texts = _texts(corpus)
    res = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], members=texts[:20], nonmembers=texts[20:40], attacks=["loss", "ref"],
                        cache_dir=None, n_bootstrap=0, blind=False, pass_settings=PassSettings(attack_chunk=5, progress=False))
    assert res.token_store is None  # no cache on disk: everything is in memory anyway


def test_the_store_falls_back_to_the_temporary_directory_when_the_cache_is_not_writable(tmp_path):
    import tempfile

    from memlens.token_file import TokenStore

    (tmp_path / "token-spill").write_text("not a directory")  # mkdir fails there, for root too
    store = TokenStore(tmp_path / "token-spill", 1, ["loss"], with_reference=False)
    assert store.path.parent == Path(tempfile.gettempdir())
    store.write(np.array([0]), ["a"], [1], {"token_ids": [np.array([5])], "tokens": [["x"]], "span_start": [np.array([0])],
                                            "span_end": [np.array([1])], "target_logprob": [np.array([-1.0])],
                                            "loss_token": [np.array([0.5])]})
    store.close()
    assert list(StoredColumn(store, "loss_token"))[0].tolist() == [0.5] and store.cell("tokens", 0) == ["x"]


def test_the_attacks_never_read_more_than_one_chunk_of_statistics_at_once(gpt2, gpt2_ref, corpus, tmp_path, monkeypatch):
    from memlens.passes.causal import StatsSource

    asked: list[int | None] = []
    real = StatsSource.bundle

    def bundle(self, positions=None):
        asked.append(None if positions is None else len(positions))
        return real(self, positions)

    _audit(gpt2, gpt2_ref, corpus, tmp_path / "cache", chunk=10_000, blind=False)  # fills the cache
    monkeypatch.setattr(StatsSource, "bundle", bundle)
    res = _audit(gpt2, gpt2_ref, corpus, tmp_path / "cache", chunk=7, blind=False)
    n = len(res.samples)
    assert asked[0] is None  # the population (compute_stats): read whole, once
    texts_asked = asked[1:]
    assert None not in texts_asked and max(texts_asked) <= 7 and sum(texts_asked) == n  # each audited text once, a chunk at a time


def test_row_groups_read_from_several_threads_at_once(tmp_path):
    """The output files are written on threads at once, reading one store: one ParquetFile shared unguarded
    between them failed ("ReadRangeCache did not find matching cache entry")."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    from memlens.token_file import RowGroups

    n = 400
    pq.write_table(pa.table({"x": pa.array([[float(i)] * 50 for i in range(n)], pa.list_(pa.float32()))}),
                   tmp_path / "t.parquet", row_group_size=1)
    rows = RowGroups(tmp_path / "t.parquet", keep=2)
    rng = np.random.default_rng(0)
    order = rng.integers(0, n, size=4000).tolist()

    def read(r: int) -> float:
        table, j = rows.row(r)
        return table.column("x")[j].values[0].as_py()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(read, order)) == [float(r) for r in order]
