"""Canaries: templates, the manifest, insertion into a training file, and exposure."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from memlens import canary as C
from memlens.data import DataError

LN2 = math.log(2)


# ---------------------------------------------------------------- templates
def test_template_slots_fill_and_size():
    t = C.Template.parse("my SSN is {ddd-dd-dddd}.")
    assert t.size == 10 ** 9
    assert t.fill(0) == "my SSN is 000-00-0000."
    assert t.fill(t.size - 1) == "my SSN is 999-99-9999."
    assert t.fill(123456789) == "my SSN is 123-45-6789."
    assert t.secret(123456789) == "123456789"
    t2 = C.Template.parse("{{id}} {Aa} says {yes|no|maybe} #{h}")
    assert t2.size == 26 * 26 * 3 * 16
    # last position varies fastest: index 1 changes the hex digit, index 16 the choice word
    assert t2.fill(0) == "{id} Aa says yes #0"
    assert t2.fill(1) == "{id} Aa says yes #1"
    assert t2.fill(16) == "{id} Aa says no #0"
    assert t2.fill(3 * 16) == "{id} Ab says yes #0"
    assert len({t2.fill(i) for i in range(t2.size)}) == t2.size  # every filling distinct


def test_context_slots_are_fixed_per_canary_and_not_ranked():
    t = C.Template.parse("{=Aa}'s pin is {dd}")
    assert (t.size, t.context_size) == (100, 26 * 26)
    assert t.fill(5) == "Aa's pin is 05" and t.fill(5, 27) == "Bb's pin is 05" and t.secret(5) == "05"
    m = C.make_canaries("{=Aaaa}'s pin is {ddd}", repetitions=[1, 4], per_count=2, held_out=2, seed=0)
    assert len({c.text.split("'")[0] for c in m.canaries}) == 6  # each canary its own name
    assert all(t2 == c.text for c in m.canaries for t2 in [C.Template.parse(c.template).fill(c.index, c.context)])
    # exposure ranks each canary among its own context's fillings: every name is scored separately
    seen = []

    def scorer(texts):
        seen.append({x.split("'")[0] for x in texts})
        return -np.array([float(x[-3:]) for x in texts])  # lower number, more likely

    res = C.exposure(m, scorer)
    assert len(seen) == 6 and all(len(s) == 1 for s in seen)
    for c, e in zip(m.canaries, res.canaries):
        assert e.rank == int(c.secret) + 1 and e.space_size == 1000


@pytest.mark.parametrize("bad, says", [
    ("my SSN is 123-45-6789", "no secret slot"),
    ("{=Aaaa} has no secret", "no secret slot"),  # context slots alone rank nothing
    ("pin {==dd}", "two '='"),
    ("", "empty"),
    ("pin {dd", "not closed"),
    ("pin dd}", "closes no slot"),
    ("pin {dx}", "'x'"),
    ("pin {}", "empty slot"),
    ("pin {a||b}", "empty choice"),
    ("pin {a|a}", "repeated choice"),
    ("pin {--}", "only separators"),
    ("pin {{dd}}", "no secret slot"),  # escaped braces are literal text
])
def test_bad_templates_give_one_clear_line(bad, says):
    with pytest.raises(DataError) as e:
        C.Template.parse(bad)
    assert says in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- make / manifest
def test_make_canaries_seeded_distinct_and_roundtrip(tmp_path):
    m = C.make_canaries(["my pin is {dddd}", "key {hhhh}"], repetitions=[1, 4, 16], per_count=2, held_out=3, seed=7)
    assert len(m.canaries) == 2 * (3 * 2 + 3)
    assert sorted(c.repetitions for c in m.canaries if c.template == "key {hhhh}") == [0, 0, 0, 1, 1, 4, 4, 16, 16]
    for src in m.templates:
        texts = [c.text for c in m.canaries if c.template == src]
        assert len(set(texts)) == len(texts)
    t = C.Template.parse("my pin is {dddd}")
    assert all(t.fill(c.index) == c.text for c in m.canaries if c.template == "my pin is {dddd}")
    again = C.make_canaries(["my pin is {dddd}", "key {hhhh}"], repetitions=[1, 4, 16], per_count=2, held_out=3, seed=7)
    assert [c.text for c in again.canaries] == [c.text for c in m.canaries]
    other = C.make_canaries(["my pin is {dddd}", "key {hhhh}"], repetitions=[1, 4, 16], per_count=2, held_out=3, seed=8)
    assert [c.text for c in other.canaries] != [c.text for c in m.canaries]
    p = m.save(tmp_path / "canaries.json")
    loaded = C.Manifest.load(p)
    assert loaded.to_dict() == m.to_dict()
    assert len(loaded.held_out()) == 6 and len(loaded.inserted()) == 12


@pytest.mark.parametrize("kwargs, says", [
    ({"repetitions": [0, 4]}, "positive integers"),
    ({"repetitions": [4, 4]}, "repeated"),
    ({"repetitions": []}, "positive integers"),
    ({"per_count": 0}, "at least 1"),
    ({"templates": "pin {d}", "per_count": 5}, "10 fillings"),
])
def test_make_bad_counts(kwargs, says):
    kw = {"templates": "pin {ddd}", **kwargs}
    with pytest.raises(DataError, match=says):
        C.make_canaries(kw.pop("templates"), **kw)


def test_manifest_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"canaries": []}))
    with pytest.raises(DataError, match="not a canary manifest"):
        C.Manifest.load(tmp_path / "x.json")


# ---------------------------------------------------------------- insert
def _train_file(tmp_path, n=50, suffix=".jsonl"):
    p = tmp_path / f"train{suffix}"
    rows = [f"training text number {i}" for i in range(n)]
    if suffix == ".txt":
        p.write_text("\n".join(rows) + "\n")
    else:
        p.write_text("".join(json.dumps({"text": r, "source": "orig"}) + "\n" for r in rows))
    return p, rows


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_insert_places_every_copy_deterministically(tmp_path, suffix):
    src, rows = _train_file(tmp_path, suffix=suffix)
    m = C.make_canaries("pin {ddd}", repetitions=[1, 4, 16], per_count=1, held_out=2, seed=0)
    C.insert(m, src, tmp_path / f"out{suffix}", seed=3)
    lines = (tmp_path / f"out{suffix}").read_text().splitlines()
    texts = lines if suffix == ".txt" else [json.loads(x)["text"] for x in lines]
    assert len(texts) == 50 + 21
    for c in m.canaries:
        assert texts.count(c.text) == c.repetitions  # held-out canaries: 0 copies
        assert [i + 1 for i, x in enumerate(texts) if x == c.text] == m.insertions["lines"].get(c.id, [])
    assert [x for x in texts if x.startswith("training")] == rows  # original order kept
    if suffix == ".jsonl":  # the original records are copied unchanged, fields included
        assert json.loads(lines[next(i for i, x in enumerate(texts) if x.startswith("training"))])["source"] == "orig"
    first = (tmp_path / f"out{suffix}").read_text()
    C.insert(m, src, tmp_path / f"again{suffix}", seed=3)
    assert (tmp_path / f"again{suffix}").read_text() == first
    C.insert(m, src, tmp_path / f"other{suffix}", seed=4)
    assert (tmp_path / f"other{suffix}").read_text() != first


def test_insert_counts_that_do_not_fit(tmp_path):
    src, _ = _train_file(tmp_path, n=20)
    m = C.make_canaries("pin {ddd}", repetitions=[1, 4, 16], seed=0)  # 21 copies > 20 records
    with pytest.raises(DataError, match="do not fit") as e:
        C.insert(m, src, tmp_path / "out.jsonl")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no 'body' field"):
        C.insert(m, src, tmp_path / "out.jsonl", text_field="body")
    with pytest.raises(DataError, match="must not overwrite"):
        C.insert(m, src, src)


# ---------------------------------------------------------------- exposure
def _fake_scorer(logppl_of_secret):
    """Log-likelihood (nats) of '... {dd}'-style texts from a known log-perplexity (bits) per secret."""
    def score(texts):
        return np.array([-logppl_of_secret(int(t.rsplit(" ", 1)[1])) * LN2 for t in texts])
    return score


def test_exposure_exact_matches_hand_computation():
    # 2-digit secret: |R| = 100. log-perplexity (bits) of secret k is |k - 37| + 1.
    m = C.Manifest([C.Canary("a", "pin {dd}", 37, "pin 37", "37", 4), C.Canary("b", "pin {dd}", 50, "pin 50", "50", 0)],
                   seed=0, templates=["pin {dd}"])
    res = C.exposure(m, _fake_scorer(lambda k: abs(k - 37) + 1))
    a, b = res.canaries
    # 37 is the unique most likely candidate: rank 1, exposure log2(100)
    assert a.method == "exact" and a.rank == 1 and a.exposure == pytest.approx(math.log2(100))
    # 50: |50-37| = 13; 25 candidates are closer to 37 (25..49), one other ties (24): mid-rank 1 + 25 + 0.5
    assert b.rank == 26.5 and b.exposure == pytest.approx(math.log2(100) - math.log2(26.5))
    assert b.log_perplexity == pytest.approx(14.0)
    summary = res.by_repetition()
    assert summary[4]["mean"] == pytest.approx(math.log2(100)) and summary[0]["n"] == 1


def test_exposure_extrapolated_agrees_with_exact_on_mid_size_space():
    from scipy import stats

    # |R| = 10^4 candidates with log-perplexities drawn from a skew-normal (what the paper fits)
    vals = stats.skewnorm.rvs(4.0, loc=20.0, scale=6.0, size=10_000, random_state=np.random.default_rng(1))
    order = np.argsort(vals)
    canaries = [C.Canary(f"c{r}", "pin {dddd}", int(order[r - 1]), f"pin {int(order[r - 1]):04d}", f"{int(order[r - 1]):04d}", 1)
                for r in (5, 50, 500, 3000)]
    m = C.Manifest(canaries, 0, ["pin {dddd}"])
    scorer = _fake_scorer(lambda k: vals[k])
    exact = C.exposure(m, scorer, method="exact")
    est = C.exposure(m, scorer, method="extrapolated", n_samples=2000, seed=0)
    for e, x in zip(exact.canaries, est.canaries):
        assert e.method == "exact" and x.method == "extrapolated" and x.rank is None
        # the 5th of 10^4 is a tail order statistic whose own position varies by ~1/sqrt(5): 1 bit there
        tol = 1.0 if e.rank <= 5 else 0.4
        assert x.exposure == pytest.approx(e.exposure, abs=tol), (e.id, e.exposure, x.exposure)
    assert [c.exposure for c in exact.canaries] == sorted([c.exposure for c in exact.canaries], reverse=True)
    # auto: exact at or below max_enumerate, extrapolated above
    assert {c.method for c in C.exposure(m, scorer, max_enumerate=10_000).canaries} == {"exact"}
    assert {c.method for c in C.exposure(m, scorer, max_enumerate=9_999, n_samples=500).canaries} == {"extrapolated"}


def test_exposure_bad_method():
    m = C.make_canaries("pin {d}", repetitions=[1], seed=0)
    with pytest.raises(DataError, match="exposure method"):
        C.exposure(m, _fake_scorer(lambda k: k), method="rank")


# ---------------------------------------------------------------- the model scorer
def test_sequence_logprobs_matches_a_hand_computation(tokenizer):
    import torch

    from tests.conftest import make_llama

    model = make_llama(len(tokenizer), seed=0)
    texts = ["my pin is 123", "a", "river stone lamp orchard violet copper"]
    got = C.sequence_logprobs(model, tokenizer, texts, batch_size=2)
    for t, g in zip(texts, got):
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        want = float(sum(lp[i, ids[0, i + 1]] for i in range(ids.shape[1] - 1)))
        assert g == pytest.approx(want, abs=1e-4)
    assert not model.training


# ---------------------------------------------------------------- a real model
@pytest.mark.slow
def test_exposure_grows_with_repetitions_on_a_trained_tiny_llama():
    """A tiny Llama trained on word salads with canaries inserted 1/4/16 times: the canaries seen
    more often get higher exposure, and held-out canaries get little. |R| = 10^6: the exposure is
    the extrapolated (skew-normal) estimate, as in the paper for large spaces."""
    from tests.conftest import make_corpus, make_llama, make_tokenizer
    from tests.tiny_lm import train_causal_lm

    seed = 0
    corpus = make_corpus(seed=seed, n=60)
    # a context slot gives every canary its own name, so the canaries do not compete for one prefix
    m = C.make_canaries("{=Aaaa}'s pin is {dddddd}", repetitions=[1, 4, 16], per_count=3, held_out=3, seed=seed)
    texts = corpus + [c.text for c in m.inserted() for _ in range(c.repetitions)]
    random.Random(seed).shuffle(texts)
    tok = make_tokenizer(corpus, vocab_size=300)
    model = make_llama(len(tok), seed=seed, init=0.02)
    train_causal_lm(model, tok, texts, steps=80, lr=3e-3, seed=seed)
    res = C.model_exposure(model, tok, m, n_samples=1000)
    assert {c.method for c in res.canaries} == {"extrapolated"}
    by = res.by_repetition()
    assert by[16]["mean"] > by[4]["mean"] > by[1]["mean"] > by[0]["mean"], by
    assert by[16]["min"] > 15.0 and by[0]["mean"] < 3.0, by


def test_target_exposure_from_a_saved_model_equals_the_in_memory_one(llama, tmp_path):
    m = C.make_canaries("{=Aa} code {dd}", repetitions=[1], per_count=2, held_out=1, seed=0)
    p = m.save(tmp_path / "canaries.json")
    from_path = C.target_exposure(llama.path, p, device="cpu", dtype="float32")
    in_memory = C.target_exposure(llama.model, m, tokenizer=llama.tokenizer)
    for a, b in zip(from_path.canaries, in_memory.canaries):
        assert a.rank == b.rank and a.exposure == pytest.approx(b.exposure)
        assert a.log_perplexity == pytest.approx(b.log_perplexity, abs=1e-4)
    saved = json.loads(from_path.save(tmp_path / "exposure.json").read_text())
    assert saved["by_repetition"]["1"]["n"] == 2 and saved["settings"]["target"] == str(llama.path)
    with pytest.raises(DataError, match="needs its tokenizer"):
        C.target_exposure(llama.model, m)
