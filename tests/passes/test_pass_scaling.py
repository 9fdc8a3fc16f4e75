"""The pass at scale: batch tokenization, out-of-memory backoff on the first batch, background cache
writes, and the stage timings an audit records."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import memlens
from memlens.cache import CacheNamespace, StatsCache
from memlens.models.causal import CausalScorer, TokenFeed, tokenize, tokenize_many
from memlens.passes._shared import Flusher
from memlens.stats import TOKEN_FIELDS

TEXTS = [
    "Amber stone by the river, code 101.",
    "Copper harbor lantern ✓ café.",
    "The willow and the cedar and the quarry falcon went to the meadow!\nNext line.",
    "Juniper tundra canyon.",
    "Velvet walnut hazel amber cobalt, code 512, and the marble cedar pebble saffron.",
    "a",
]


def test_tokenize_many_is_tokenize_of_each_text(tokenizer, corpus):
    texts = corpus[:23] + TEXTS
    many = tokenize_many(tokenizer, texts, chunk=7)  # several chunks, the last one short
    assert len(many) == len(texts)
    for text, tk in zip(texts, many):
        one = tokenize(tokenizer, text)
        assert (tk.ids, tk.spans, tk.first_scored) == (one.ids, one.spans, one.first_scored)


def _oom_above(model: torch.nn.Module, limit: int, calls: list[int]):
    """Make ``model`` fail as CUDA does when a batch has more than ``limit`` rows."""
    orig = model.forward

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(ids.shape[0])
        if ids.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (simulated)")
        return orig(*args, **kwargs)

    return forward


def test_oom_on_first_batch_lowers_the_batch_size_and_scores_the_same(gpt2, gpt2_ref, tokenizer, corpus, monkeypatch):
    texts = corpus[:20]
    clean = CausalScorer([gpt2.model, gpt2_ref.model], tokenizer, batch_size=3, progress=False).score(texts)
    calls: list[int] = []
    monkeypatch.setattr(gpt2.model, "forward", _oom_above(gpt2.model, 3, calls))
    delivered: list[int] = []
    scorer = CausalScorer([gpt2.model, gpt2_ref.model], tokenizer, batch_size=16, progress=False)
    got = scorer.score(texts, on_batch_done=lambda done: delivered.extend(done))
    assert scorer.batch_size == 2  # 16 -> 8 -> 4 -> 2 (halved until the first batch fits)
    assert calls[:4] == [16, 8, 4, 2] and max(calls[3:]) <= 2
    assert sorted(delivered) == list(range(len(texts)))  # every text delivered once: nothing from a failed attempt
    assert sorted(got) == sorted(clean)
    for i in clean:
        for a, b in zip(clean[i]["stats"], got[i]["stats"]):
            np.testing.assert_allclose(a.logprob, b.logprob, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(a.rank, b.rank)
        for k in clean[i]["pair"]:
            np.testing.assert_allclose(clean[i]["pair"][k], got[i]["pair"][k], rtol=1e-5, atol=1e-5)


def test_oom_after_the_first_batch_is_not_swallowed(gpt2, tokenizer, corpus, monkeypatch):
    """Only the first (largest) batch probes the size; a later failure is a real error, not retried."""
    calls: list[int] = []
    orig = gpt2.model.forward

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (simulated)")
        return orig(*args, **kwargs)

    monkeypatch.setattr(gpt2.model, "forward", forward)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        CausalScorer([gpt2.model], tokenizer, batch_size=4, progress=False).score(corpus[:12])
    assert len(calls) == 2


def test_keep_false_delivers_without_collecting(gpt2, tokenizer, corpus):
    delivered: dict[int, dict] = {}
    out = CausalScorer([gpt2.model], tokenizer, batch_size=4, progress=False).score(corpus[:9], on_batch_done=delivered.update,
                                                                                    keep=False)
    assert out == {} and sorted(delivered) == list(range(9))


class _Failing(CacheNamespace):
    def put(self, records):
        raise OSError("disk full (simulated)")


def test_flusher_writes_in_the_background_and_reports_a_failed_write(tmp_path):
    ns = StatsCache(tmp_path).namespace({"kind": "test"})
    f = Flusher([ns], every=2)
    for i in range(5):
        f.add([{f"h{i}": {"x": np.arange(i + 1, dtype=np.float32)}}])
    f.close()
    fresh = StatsCache(tmp_path).namespace({"kind": "test"})  # reads the shards from disk
    got = fresh.get([f"h{i}" for i in range(5)])
    assert sorted(got) == [f"h{i}" for i in range(5)]
    np.testing.assert_array_equal(got["h3"]["x"], np.arange(4, dtype=np.float32))
    assert len(list(ns.dir.glob("*.parquet"))) == 3  # shards of 2, 2 and 1 texts

    bad = Flusher([_Failing(tmp_path, {"kind": "bad"})], every=1)
    with pytest.raises(OSError, match="disk full"):
        bad.add([{"a": {"x": np.zeros(2)}}])
        bad.add([{"b": {"x": np.zeros(2)}}])
        bad.close()


def test_audit_records_stage_timings_and_peak_memory(gpt2, gpt2_ref, tokenizer, tmp_path):
    population = ["Cobalt falcon ember.", "Hazel quarry willow lamp."]  # not among the audited texts: a pass of its own
    res = memlens.audit(gpt2.model, gpt2_ref.model, members=TEXTS[:3], nonmembers=TEXTS[3:], population=population,
                        tokenizer=tokenizer, attacks=["loss", "rmia", "informia_token"], cache_dir=tmp_path / "cache",
                        device="cpu", n_bootstrap=10, progress=False)
    for stage in ("load (handles, tokenizers)", "texts: pass", "texts: load models", "texts: cache read", "population: pass",
                  "attacks", "metrics", "token strings", "texts: tokenize (background, overlaps load and pass)",
                  "texts: pass: waited for tokens", "blind baseline: waited for it"):
        assert res.timings[stage] >= 0, stage
    # the blind baseline's classifier ran in its own process while the models scored
    assert res.timings["blind baseline: own process, overlapping the pass (its wall time)"] > 0 and "blind" in res.extra
    res.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"save: scores.csv", "save: token_scores.parquet", "attacks"} <= set(saved["timings"])
    assert all(isinstance(v, float) for v in saved["timings"].values())  # the benchmark prints every entry as seconds
    assert saved["peak_rss_mb"] > 10


def _assert_results_equal(a: dict, b: dict, exact: bool) -> None:
    assert sorted(a) == sorted(b)
    check = np.testing.assert_array_equal if exact else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6))
    for i in a:
        for sa, sb in zip(a[i]["stats"], b[i]["stats"]):
            for k in TOKEN_FIELDS:
                (np.testing.assert_array_equal if TOKEN_FIELDS[k].kind == "i" else check)(getattr(sa, k), getattr(sb, k))
        assert sorted(a[i]["pair"]) == sorted(b[i]["pair"])
        for k in a[i]["pair"]:
            check(a[i]["pair"][k], b[i]["pair"][k])


def test_streamed_tokenization_scores_as_tokenizing_everything_first(gpt2, gpt2_ref, tokenizer, corpus):
    """The pass fed chunk by chunk from the background tokenizer gives every text the statistics it gets
    when every text is tokenized first; one chunk gives the very same batches, hence the same bits."""
    # long texts too (several windows of the 64-position model), so windows of one text span batches
    texts = corpus[:25] + TEXTS[:5] + [" ".join(corpus[i:i + 6]) for i in range(0, 18, 6)]
    models = [gpt2.model, gpt2_ref.model]
    before = CausalScorer(models, tokenizer, batch_size=4, progress=False).score_tokenized(tokenize_many(tokenizer, texts))
    longest_first = sorted(range(len(texts)), key=lambda j: -len(texts[j]))
    delivered: list[int] = []
    for chunk, exact in ((len(texts), True), (5, False), (1, False)):
        scorer = CausalScorer(models, tokenizer, batch_size=4, progress=False)
        with TokenFeed(tokenizer, texts, longest_first, chunk=chunk) as feed:
            got = scorer.score(texts, on_batch_done=lambda done: delivered.extend(done), feed=feed)
        assert sorted(delivered) == list(range(len(texts)))  # every text delivered once
        delivered.clear()
        _assert_results_equal(before, got, exact)
        assert feed.timings["tokenize (background)"] > 0 and feed.timings["wait for tokens"] >= 0


def test_token_feed_yields_every_text_once_and_reraises_a_tokenizer_error(tokenizer, corpus):
    texts = corpus[:11]
    with TokenFeed(tokenizer, texts, list(reversed(range(11))), chunk=4, prefetch=1) as feed:
        got = list(feed)
    assert [idx for idx, _ in got] == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 1, 2]]  # chunks in the given order, each in index order
    for idx, toks in got:
        for i, tk in zip(idx, toks):
            assert tk.ids == tokenize(tokenizer, texts[i]).ids

    class Broken:
        def __call__(self, *a, **k):
            raise RuntimeError("tokenizer broke (simulated)")

    with pytest.raises(RuntimeError, match="tokenizer broke"), TokenFeed(Broken(), texts, range(11), chunk=4) as feed:
        list(feed)
    assert not feed._thread.is_alive()
    # a consumer that stops early stops the thread (it does not block on a full queue)
    feed = TokenFeed(tokenizer, texts, range(11), chunk=1, prefetch=1)
    next(iter(feed))
    feed.close()
    assert not feed._thread.is_alive()


def test_the_tokenizer_process_gives_the_tokens_and_scores_of_tokenizing_here(gpt2, gpt2_ref, tokenizer, corpus):
    """The worker process (memlens._tokenize_worker) hands back numpy arrays: the same ids and spans as
    tokenizing in this process, and the pass fed by it scores every text bit for bit as before."""
    texts = corpus[:9] + TEXTS[:3] + [" ".join(corpus[i:i + 6]) for i in range(0, 12, 6)]
    order = sorted(range(len(texts)), key=lambda j: -len(texts[j]))
    with TokenFeed(tokenizer, texts, order, chunk=4, process=True) as feed:
        got = list(feed)
    assert feed.process and feed.timings["tokenize (background)"] > 0
    assert sorted(i for idx, _ in got for i in idx) == list(range(len(texts)))
    for idx, toks in got:
        for i, tk in zip(idx, toks):
            ref = tokenize(tokenizer, texts[i])
            assert isinstance(tk.ids, np.ndarray) and tk.ids.tolist() == list(ref.ids)
            assert np.asarray(tk.spans).tolist() == [list(x) for x in ref.spans] and tk.first_scored == ref.first_scored
    models = [gpt2.model, gpt2_ref.model]
    before = CausalScorer(models, tokenizer, batch_size=4, progress=False).score_tokenized(tokenize_many(tokenizer, texts))
    with TokenFeed(tokenizer, texts, order, chunk=len(texts), process=True) as feed:
        after = CausalScorer(models, tokenizer, batch_size=4, progress=False).score(texts, feed=feed)
    _assert_results_equal(before, after, True)
    # a consumer that stops early stops the work; a tokenizer that is not fast cannot go to the process
    feed = TokenFeed(tokenizer, texts, range(len(texts)), chunk=1, prefetch=1, process=True)
    next(iter(feed))
    feed.close()
    assert not feed._thread.is_alive()
    with pytest.raises(ValueError, match="fast tokenizer"):
        TokenFeed(object(), texts, range(3), process=True)


def _fake_worker(code: str):
    """memlens._io.worker_process replaced by a child that runs ``code`` (stdin and stdout piped, as the real one)."""
    import subprocess
    import sys

    def start(module, **kw):
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return start


def test_a_tokenizer_process_that_dies_leaves_the_work_to_the_thread(tokenizer, corpus, monkeypatch, caplog):
    from memlens import _io

    texts = corpus[:10]
    monkeypatch.setattr(_io, "worker_process", _fake_worker("import sys; sys.exit(3)"))
    with caplog.at_level("WARNING", logger="memlens"), TokenFeed(tokenizer, texts, range(10), chunk=4, process=True) as feed:
        got = list(feed)
    assert [i for idx, _ in got for i in idx] == list(range(10))
    assert all(tk.ids == tokenize(tokenizer, texts[i]).ids for idx, toks in got for i, tk in zip(idx, toks))
    assert "tokenizer process failed" in caplog.text


def test_an_error_in_the_tokenizer_process_reaches_the_consumer(tokenizer, corpus, monkeypatch):
    from memlens import _io

    reply = ("import pickle, sys; pickle.load(sys.stdin.buffer); pickle.load(sys.stdin.buffer); "
             "pickle.dump(('error', 'ValueError: boom'), sys.stdout.buffer); sys.stdout.flush()")
    monkeypatch.setattr(_io, "worker_process", _fake_worker(reply))
    with pytest.raises(RuntimeError, match="tokenizing failed: ValueError: boom"), \
            TokenFeed(tokenizer, corpus[:6], range(6), chunk=3, process=True) as feed:
        list(feed)
    assert not feed._thread.is_alive() and feed._proc.poll() is not None


def test_oom_on_the_first_batch_of_a_streamed_pass_backs_off_too(gpt2, tokenizer, corpus, monkeypatch):
    texts = corpus[:20]
    clean = CausalScorer([gpt2.model], tokenizer, batch_size=2, progress=False).score(texts)
    calls: list[int] = []
    monkeypatch.setattr(gpt2.model, "forward", _oom_above(gpt2.model, 2, calls))
    scorer = CausalScorer([gpt2.model], tokenizer, batch_size=8, progress=False)
    delivered: list[int] = []
    with TokenFeed(tokenizer, texts, range(len(texts)), chunk=3) as feed:  # the first batch needs three chunks
        got = scorer.score(texts, on_batch_done=lambda done: delivered.extend(done), feed=feed)
    assert scorer.batch_size == 2 and calls[:3] == [8, 4, 2] and max(calls[2:]) <= 2
    assert sorted(delivered) == list(range(len(texts)))
    _assert_results_equal(clean, got, exact=False)


def test_under_data_parallelism_a_process_tokenizes_only_its_own_share(gpt2, tokenizer, corpus, tmp_path, monkeypatch):
    """Process 1 of 2 feeds the tokenizer thread every second missing text (in the main process's order) and
    no other: the split comes before tokenizing."""
    import memlens.models.causal as mc
    import memlens.passes.causal as pc
    from memlens.cache import text_hash
    from memlens.models.handle import ModelHandle

    class Rank1:
        process_index, num_processes, is_main_process = 1, 2, True  # it plans here (the broadcast is the identity)

        def wait_for_everyone(self):
            pass

    fed: list[str] = []
    real_feed = mc.TokenFeed

    class SpyFeed(real_feed):
        def __init__(self, tok, texts, order, **kw):
            fed.extend(texts)
            super().__init__(tok, texts, order, **kw)

    monkeypatch.setattr(pc, "distributed_state", lambda: Rank1())
    monkeypatch.setattr(mc, "TokenFeed", SpyFeed)
    texts = corpus[:9]
    handle = ModelHandle(str(gpt2.path))
    ns = StatsCache(tmp_path).namespace({"kind": "test-data-parallel"})
    n = pc._run_pass([handle], texts, [text_hash(t) for t in texts], [ns], None, pc.PassSettings(progress=False, batch_size=4))
    missing = sorted(texts, key=text_hash)  # the work list: missing texts by hash
    assert fed == missing[1::2] and n == len(fed)
    assert sorted(ns.get([text_hash(t) for t in texts])) == sorted(text_hash(t) for t in fed)  # it scored its share only


def test_the_tokenizer_process_never_reruns_the_callers_script(tokenizer, corpus, tmp_path):
    """A user's script that tokenizes (audits) at top level, without an ``if __name__ == "__main__"`` guard, runs
    once: the worker is a plain child process (``python -m memlens._tokenize_worker``), not multiprocessing's
    spawn, which would import the script again in the child."""
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "texts.json").write_text(json.dumps(corpus[:8]))
    script = tmp_path / "user_script.py"
    script.write_text(
        "import json, pathlib\n"
        "from transformers import AutoTokenizer\n"
        "from memlens.models.causal import TokenFeed\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "with open(here / 'runs.txt', 'a') as f:\n"
        "    f.write('run\\n')\n"
        "tok = AutoTokenizer.from_pretrained(here / 'tok')\n"
        "texts = json.loads((here / 'texts.json').read_text())\n"
        "with TokenFeed(tok, texts, range(len(texts)), chunk=3, process=True) as feed:\n"
        "    n = sum(len(idx) for idx, _ in feed)\n"
        "print(n, feed.process)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(Path(memlens.__file__).parents[1]),
                                                                               os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["8", "True"]
    assert (tmp_path / "runs.txt").read_text() == "run\n"
