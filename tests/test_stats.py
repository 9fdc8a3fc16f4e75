"""The statistics pass against a brute-force float64 computation, batch invariance and windowing."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from memlens.models.causal import (
    CausalScorer,
    TextTooShortError,
    Window,
    batches_by_length,
    make_windows,
    tokenize,
)
from memlens.models.reductions import pair_reductions, single_model_reductions
from memlens.stats import TOKEN_FIELDS, TokenStats

TEXTS = [
    "The quick river runs over amber stone, code 417.",
    "Lantern",
    "Willow and cedar, velvet tundra: ✓ café! Next line:\n  two spaces.",
    "a b c d e f g h i j k l m n o p",
]


def double_logits(model: torch.nn.Module, ids: list[int]) -> np.ndarray:
    """Logits [L, V] of one unpadded sequence from a float64 copy of the model."""
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        return m(input_ids=torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def log_softmax(row: np.ndarray) -> np.ndarray:
    mx = row.max()
    return row - (mx + math.log(np.exp(row - mx).sum()))


def brute_single(logits: np.ndarray, ids: list[int], first: int = 1) -> dict[str, list]:
    """Per scored token: logprob, entropy, mu, sigma, rank, from the full softmax in float64."""
    out = {k: [] for k in ("logprob", "entropy", "mean_logp", "std_logp", "rank")}
    for t in range(first, len(ids)):
        row = logits[t - 1]
        lp = log_softmax(row)
        p = np.exp(lp)
        x = ids[t]
        mu = float(np.sum(p * lp))
        var = float(np.sum(p * (lp - mu) ** 2))
        out["logprob"].append(float(lp[x]))
        out["entropy"].append(-mu)
        out["mean_logp"].append(mu)
        out["std_logp"].append(math.sqrt(var))
        out["rank"].append(1 + int(np.sum(row > row[x])))
    return out


def brute_pair(lt: np.ndarray, lrs: list[np.ndarray], ids: list[int], temperature: float) -> dict[str, list]:
    out = {"kl_ref_target": [], "log_ratio": []}
    for t in range(1, len(ids)):
        lp = log_softmax(lt[t - 1] / temperature)
        q = np.mean([np.exp(log_softmax(r[t - 1] / temperature)) for r in lrs], axis=0)
        x = ids[t]
        out["kl_ref_target"].append(float(np.sum(q * (np.log(q) - lp))))
        out["log_ratio"].append(float(lp[x] - math.log(q[x])))
    return out


def assert_stats_close(st: TokenStats, want: dict[str, list], atol=1e-5):
    for k, v in want.items():
        got = getattr(st, k)
        if k == "rank":
            assert got.tolist() == v, k
        else:
            np.testing.assert_allclose(got, v, atol=atol, rtol=0, err_msg=k)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_single_stats_match_brute_force(which, request, tokenizer):
    tm = request.getfixturevalue(which)
    scorer = CausalScorer([tm.model], tokenizer, batch_size=4, progress=False, vocab_chunk_rows=7)
    res = scorer.score(TEXTS)
    assert sorted(res) == list(range(len(TEXTS)))
    for i, text in enumerate(TEXTS):
        tk = tokenize(tokenizer, text)
        st = res[i]["stats"][0]
        assert len(st) == len(tk.ids) - 1
        assert st.token_ids.tolist() == tk.ids[1:]
        assert_stats_close(st, brute_single(double_logits(tm.model, tk.ids), tk.ids))
        np.testing.assert_allclose(st.entropy, -st.mean_logp, atol=1e-6)
        assert res[i]["pair"] == {}


def test_stats_have_varied_values(gpt2, tokenizer):
    """The fixture models are not near-uniform, so the brute-force checks mean something."""
    st = CausalScorer([gpt2.model], tokenizer, progress=False).score(TEXTS[:1])[0]["stats"][0]
    assert st.std_logp.min() > 0.3
    assert len(set(st.rank.tolist())) > 3
    assert np.ptp(st.logprob) > 1.0


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
@pytest.mark.parametrize("n_refs", [1, 2])
def test_paired_stats_match_brute_force(temperature, n_refs, gpt2, gpt2_ref, gpt2_ref2, tokenizer):
    refs = [gpt2_ref.model, gpt2_ref2.model][:n_refs]
    scorer = CausalScorer([gpt2.model, *refs], tokenizer, batch_size=3, temperature=temperature, progress=False,
                          vocab_chunk_rows=5)
    assert scorer.paired
    res = scorer.score(TEXTS)
    for i, text in enumerate(TEXTS):
        ids = tokenize(tokenizer, text).ids
        lt = double_logits(gpt2.model, ids)
        lrs = [double_logits(r, ids) for r in refs]
        pair = res[i]["pair"]
        want = brute_pair(lt, lrs, ids, temperature)
        for k in ("kl_ref_target", "log_ratio"):
            np.testing.assert_allclose(pair[k], want[k], atol=1e-5, rtol=0, err_msg=k)
        assert np.all(pair["kl_ref_target"] >= 0)
        # Each model's own statistics are untempered, and the same as in a single pass.
        assert len(res[i]["stats"]) == 1 + n_refs
        assert_stats_close(res[i]["stats"][0], brute_single(lt, ids))
        for j, lr in enumerate(lrs):
            assert_stats_close(res[i]["stats"][1 + j], brute_single(lr, ids))


def test_paired_with_itself_has_zero_kl_and_ratio(gpt2, tokenizer):
    res = CausalScorer([gpt2.model, gpt2.model], tokenizer, progress=False).score(TEXTS[:2])
    for r in res.values():
        np.testing.assert_allclose(r["pair"]["kl_ref_target"], 0, atol=1e-6)
        np.testing.assert_allclose(r["pair"]["log_ratio"], 0, atol=1e-6)


def test_reductions_on_raw_logits_match_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g, dtype=torch.float64) * 3
    ref = torch.randn(6, 50, generator=g, dtype=torch.float64) * 3
    targets = torch.tensor([0, 5, 49, 10, 10, 3])
    logits[3, 7] = logits[3, 10]  # a tie with the true token: ties share the best rank
    got = single_model_reductions(logits.float(), targets)
    for t in range(6):
        row = logits[t].numpy()
        lp = log_softmax(row)
        p = np.exp(lp)
        mu = float((p * lp).sum())
        assert got["logprob"][t].item() == pytest.approx(lp[targets[t]], abs=1e-5)
        assert got["mean_logp"][t].item() == pytest.approx(mu, abs=1e-5)
        assert got["std_logp"][t].item() == pytest.approx(math.sqrt(float((p * (lp - mu) ** 2).sum())), abs=1e-5)
        assert got["rank"][t].item() == 1 + int((row > row[targets[t]]).sum())
    pr = pair_reductions(logits, ref, targets, temperature=1.3)
    for t in range(6):
        lp = log_softmax(logits[t].numpy() / 1.3)
        lq = log_softmax(ref[t].numpy() / 1.3)
        assert pr["kl_ref_target"][t].item() == pytest.approx(float((np.exp(lq) * (lq - lp)).sum()), abs=1e-5)
        assert pr["log_ratio"][t].item() == pytest.approx(lp[targets[t]] - lq[targets[t]], abs=1e-5)


def test_unknown_pair_reduction():
    with pytest.raises(KeyError, match="unknown paired reduction"):
        pair_reductions(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 1]), names=("nope",))


# ---------------------------------------------------------------------------------------------
# Batch invariance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_batch_invariance(which, request, tokenizer):
    tm = request.getfixturevalue(which)
    alone = {i: CausalScorer([tm.model], tokenizer, batch_size=1, progress=False).score([t])[0] for i, t in enumerate(TEXTS)}
    batched = CausalScorer([tm.model], tokenizer, batch_size=len(TEXTS), progress=False).score(TEXTS)
    lengths = {len(tokenize(tokenizer, t).ids) for t in TEXTS}
    assert len(lengths) == len(TEXTS)  # the batch really is padded
    for i in range(len(TEXTS)):
        a, b = alone[i]["stats"][0], batched[i]["stats"][0]
        for k in TOKEN_FIELDS:
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-5, rtol=0, err_msg=k)


def test_batch_invariance_paired(gpt2, gpt2_ref, tokenizer):
    alone = [CausalScorer([gpt2.model, gpt2_ref.model], tokenizer, batch_size=1, progress=False).score([t])[0] for t in TEXTS]
    batched = CausalScorer([gpt2.model, gpt2_ref.model], tokenizer, batch_size=8, progress=False).score(TEXTS)
    for i in range(len(TEXTS)):
        for k, v in alone[i]["pair"].items():
            np.testing.assert_allclose(v, batched[i]["pair"][k], atol=1e-5, rtol=0)


def test_max_tokens_per_batch_gives_same_stats(gpt2, tokenizer):
    a = CausalScorer([gpt2.model], tokenizer, batch_size=8, progress=False).score(TEXTS)
    b = CausalScorer([gpt2.model], tokenizer, batch_size=8, max_tokens_per_batch=40, progress=False).score(TEXTS)
    for i in a:
        np.testing.assert_allclose(a[i]["stats"][0].logprob, b[i]["stats"][0].logprob, atol=1e-5)


def test_on_batch_done_reports_every_text_once(gpt2, tokenizer):
    seen: list[int] = []
    CausalScorer([gpt2.model], tokenizer, batch_size=2, progress=False).score(TEXTS, on_batch_done=lambda d: seen.extend(d))
    assert sorted(seen) == list(range(len(TEXTS)))


# ---------------------------------------------------------------------------------------------
# Long texts: windows
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_text(corpus) -> str:
    return " ".join(corpus[:5])


def test_long_text_is_windowed_not_truncated(gpt2_short, tokenizer, long_text):
    tk = tokenize(tokenizer, long_text)
    n_tokens = len(tk.ids) - 1
    assert n_tokens > 3 * 32
    scorer = CausalScorer([gpt2_short.model], tokenizer, batch_size=4, progress=False)
    assert scorer.max_length == 32 and scorer.stride == 16
    st = scorer.score([long_text])[0]["stats"][0]
    assert len(st) == n_tokens
    assert st.token_ids.tolist() == tk.ids[1:]
    # Spans are the tokenizer's offsets, in order, covering the text.
    assert list(zip(st.span_start.tolist(), st.span_end.tolist())) == tk.spans
    assert np.all(np.diff(st.span_start) >= 0)
    assert st.span_start[0] == 0 and st.span_end[-1] == len(long_text)
    # Every window's scored tokens equal a brute-force pass over that window alone.
    for w in make_windows(len(tk.ids), 0, 32, 16):
        ids = tk.ids[w.start:w.end]
        want = brute_single(double_logits(gpt2_short.model, ids), ids, first=w.score_from - w.start)
        keep = np.arange(w.score_from - 1, w.end - 1)
        assert_stats_close(TokenStats(**{k: getattr(st, k)[keep] for k in TOKEN_FIELDS}), want)


def test_first_window_equals_prefix_scored_alone(gpt2_short, tokenizer, long_text):
    tk = tokenize(tokenizer, long_text)
    st = CausalScorer([gpt2_short.model], tokenizer, progress=False).score([long_text])[0]["stats"][0]
    # Cut the text after a word inside the first window, so the prefix tokenizes identically.
    cut = max(i for i in range(1, 31) if long_text[tk.spans[i][0]] == " ")
    prefix = long_text[: tk.spans[cut - 1][1]]
    assert tokenize(tokenizer, prefix).ids == tk.ids[: cut + 1]
    alone = CausalScorer([gpt2_short.model], tokenizer, progress=False).score([prefix])[0]["stats"][0]
    assert len(alone) == cut
    for k in TOKEN_FIELDS:
        np.testing.assert_allclose(getattr(st, k)[:cut], getattr(alone, k), atol=1e-5, rtol=0, err_msg=k)


def test_long_text_in_a_batch_with_short_ones(gpt2_short, tokenizer, long_text):
    texts = [TEXTS[0], long_text, TEXTS[1]]
    res = CausalScorer([gpt2_short.model], tokenizer, batch_size=3, progress=False).score(texts)
    alone = CausalScorer([gpt2_short.model], tokenizer, batch_size=1, progress=False).score([long_text])[0]
    np.testing.assert_allclose(res[1]["stats"][0].logprob, alone["stats"][0].logprob, atol=1e-5)
    assert len(res[0]["stats"][0]) == len(tokenize(tokenizer, TEXTS[0]).ids) - 1


def test_max_length_smaller_than_context(gpt2, tokenizer, long_text):
    scorer = CausalScorer([gpt2.model], tokenizer, max_length=20, stride=5, progress=False)
    st = scorer.score([long_text])[0]["stats"][0]
    assert len(st) == len(tokenize(tokenizer, long_text).ids) - 1
    # max_length is capped by the model's context
    assert CausalScorer([gpt2.model], tokenizer, max_length=10_000, progress=False).max_length == 64


@pytest.mark.parametrize("n_ids,max_len,stride", [
    (5, 8, 4), (8, 8, 4), (9, 8, 4), (100, 8, 4), (100, 8, 7), (100, 8, 1), (33, 32, 16), (257, 32, 16), (64, 16, 3),
])
def test_make_windows_scores_every_token_once(n_ids, max_len, stride):
    wins = make_windows(n_ids, 3, max_len, stride)
    scored = [t for w in wins for t in range(w.score_from, w.end)]
    assert scored == list(range(1, n_ids))  # each token once, in order
    for k, w in enumerate(wins):
        assert w.text_index == 3
        assert 0 <= w.start < w.score_from <= w.end <= n_ids
        assert w.end - w.start <= max_len
        if k > 0:
            assert w.end - w.start == max_len  # later windows use the full context
            assert w.score_from - w.start >= max_len - stride  # at least max_len - stride of context
            assert w.score_from == wins[k - 1].end
            assert w.end - w.score_from <= stride
    if n_ids > max_len:
        assert len(wins) == 1 + math.ceil((n_ids - max_len) / stride)


@pytest.mark.parametrize("stride", [0, 8, -1])
def test_make_windows_bad_stride(stride):
    with pytest.raises(ValueError, match="stride"):
        make_windows(100, 0, 8, stride)


def test_batches_by_length():
    wins = [Window(i, 0, n, 1) for i, n in enumerate([3, 10, 5, 10, 2, 7])]
    batches = list(batches_by_length(wins, batch_size=2, max_tokens=None))
    assert [[w.text_index for w in b] for b in batches] == [[1, 3], [5, 2], [0, 4]]
    capped = list(batches_by_length(wins, batch_size=10, max_tokens=20))
    assert all(max(w.end for w in b) * len(b) <= 20 for b in capped)
    assert sorted(w.text_index for b in capped for w in b) == list(range(6))


def test_tokenize_without_context_token(tokenizer):
    tk = tokenize(tokenizer, "amber stone river", add_context_token=False)
    full = tokenize(tokenizer, "amber stone river")
    assert tk.ids == full.ids[1:]
    assert tk.spans == full.spans[1:]
    with pytest.raises(TextTooShortError):
        tokenize(tokenizer, "a", add_context_token=False)


def test_scorer_rejects_bad_settings(gpt2, tokenizer):
    with pytest.raises(ValueError, match="temperature"):
        CausalScorer([gpt2.model], tokenizer, temperature=0.0)
    with pytest.raises(ValueError, match="max_length"):
        CausalScorer([gpt2.model], tokenizer, max_length=1)


def test_settings_exclude_batch_size(gpt2, tokenizer):
    a = CausalScorer([gpt2.model], tokenizer, batch_size=1).settings()
    b = CausalScorer([gpt2.model], tokenizer, batch_size=7).settings()
    assert a == b


# ---------------------------------------------------------------------------------------------
# TokenStats container
# ---------------------------------------------------------------------------------------------


def _ts(n, offset=0.0):
    return TokenStats(token_ids=np.arange(n), logprob=-np.arange(n) - offset, entropy=np.ones(n), mean_logp=-np.ones(n),
                      std_logp=np.ones(n), rank=np.ones(n), span_start=np.arange(n), span_end=np.arange(n) + 1)


def test_tokenstats_dtypes_and_validation():
    st = _ts(4)
    for k, dt in TOKEN_FIELDS.items():
        assert getattr(st, k).dtype == dt
    assert len(st) == 4
    with pytest.raises(ValueError, match="logprob"):
        TokenStats(token_ids=[1, 2], logprob=[0.0], entropy=[0, 0], mean_logp=[0, 0], std_logp=[0, 0], rank=[1, 1],
                   span_start=[0, 1], span_end=[1, 2])
