"""The masked-LM pass (memlens.models.masked, memlens.passes.masked): masking configurations, losses, batching, cache, loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from memlens.cache import StatsCache, text_hash
from memlens.errors import CacheMissError
from memlens.models.handle import LoadOptions, ModelHandle
from memlens.models.masked import (
    MaskedLMError,
    MaskedModelHandle,
    MaskedPassSettings,
    mask_counts,
    mask_densities,
    resolve_mask_behaviour,
    sample_masks,
    tokenize_for_masking,
)
from memlens.passes.masked import masked_attack_input, score_masked
from memlens.stats import MaskedProbe
from memlens.testbed.diffusion import add_mask_token, make_model, train_tokenizer

TEXTS = [
    "Ada Lovelace was born on 10/12/1815 in London. Contact: ada@example.org, phone 555-010-1815.",
    "The river stone lamp stood by the orchard.",
    "Alan Turing worked at Bletchley Park; his phone was 555-019-1912 and his e-mail alan@example.org.",
    "Short one.",
    "Grace Hopper (1906-12-09) lives in New York. She works as a rear admiral at the US Navy.",
]


@pytest.fixture(scope="module")
def mtok():
    return train_tokenizer(TEXTS * 3 + ["Some other words about lamps and rivers, 0123456789 @ . , ;"], vocab_size=300)


@pytest.fixture(scope="module")
def mlm(mtok):
    torch.manual_seed(0)
    m = make_model(mtok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=0)
    for p in m.parameters():  # larger weights: peaked, varied predictions
        p.data.normal_(0, 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def mlm_ref(mtok):
    return make_model(mtok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=1).eval()


# ------------------------------------------------------------------ masking configurations
def test_densities_follow_the_schedule():
    a = mask_densities(16, 0.05, 0.5)
    assert a[0] == pytest.approx(0.05) and a[-1] == pytest.approx(0.5)
    assert np.allclose(np.diff(a), 0.45 / 15)
    assert mask_densities(1, 0.05, 0.5).tolist() == [0.05]
    # k_t = max(1, ceil(alpha_t * L)): 5% of 20 is exactly 1 token, 50% of 20 is 10
    k = mask_counts(20, a)
    assert k[0] == 1 and k[-1] == 10 and np.all(np.diff(k) >= 0)
    assert mask_counts(3, a)[0] == 1 and mask_counts(0, a).sum() == 0


def test_masks_are_nested_seeded_by_text_and_seed():
    s = MaskedPassSettings(steps=16, seed=3)
    key = text_hash("hello")
    m = sample_masks(40, key, s)
    assert m.shape == (16, 40)
    assert np.array_equal(m.sum(axis=1), mask_counts(40, mask_densities(16)))
    assert np.all(m[1:] >= m[:-1])  # progressive: every mask contains the previous one
    assert np.array_equal(m, sample_masks(40, key, s))  # reproducible
    assert not np.array_equal(m, sample_masks(40, text_hash("hello!"), s))  # another text
    assert not np.array_equal(m, sample_masks(40, key, MaskedPassSettings(steps=16, seed=4)))  # another seed
    ind = sample_masks(40, key, MaskedPassSettings(steps=16, seed=3, nested=False))
    assert np.array_equal(ind.sum(axis=1), m.sum(axis=1)) and not np.all(ind[1:] >= ind[:-1])
    assert sample_masks(0, key, s).shape == (16, 0)


def test_bad_settings_are_refused():
    with pytest.raises(MaskedLMError):
        MaskedPassSettings(alpha_min=0.6, alpha_max=0.5)
    with pytest.raises(MaskedLMError):
        MaskedPassSettings(steps=0)


# ------------------------------------------------------------------ tokenization
def test_special_tokens_are_never_masked():
    from tokenizers import processors

    tok = train_tokenizer(TEXTS, vocab_size=280)
    tok.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]"})
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.cls_token_id), ("[SEP]", tok.sep_token_id)])
    mt = tokenize_for_masking(tok, TEXTS[0], max_length=512)
    assert mt.ids[0] == tok.cls_token_id and mt.ids[-1] == tok.sep_token_id
    assert mt.positions.tolist() == list(range(1, len(mt.ids) - 1))
    # spans point at the text
    assert TEXTS[0][mt.spans[0, 0]:mt.spans[-1, 1]].strip() == TEXTS[0]
    short = tokenize_for_masking(tok, TEXTS[0], max_length=8)
    assert short.truncated and len(short.ids) == 8 and short.ids[-1] == tok.sep_token_id
    assert short.positions.tolist() == list(range(1, 7))


def test_mask_token_resolution(mtok):
    assert resolve_mask_behaviour("bert", mtok) == (mtok.mask_token_id, False)
    assert resolve_mask_behaviour("llada", object()) == (126336, False)
    assert resolve_mask_behaviour("Dream", object()) == (151666, True)
    assert resolve_mask_behaviour("bert", object(), mask_token_id=7, shift_logits=True) == (7, True)
    with pytest.raises(MaskedLMError, match="declares no mask token"):
        resolve_mask_behaviour("bert", object())


# ------------------------------------------------------------------ the pass
def _direct_nll(model, tok, text, mask_row, shift=False):
    """-log p(x_i | masked text) for the masked positions, one sequence, no batching."""
    mt = tokenize_for_masking(tok, text, max_length=64)
    ids = torch.tensor([mt.ids])
    cols = mt.positions[mask_row]
    ids[0, cols] = tok.mask_token_id
    with torch.no_grad():
        out = model(input_ids=ids)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    lp = torch.log_softmax(logits[0].double(), -1)
    rows = [max(c - 1, 0) if shift else c for c in cols]
    return -np.array([lp[r, mt.ids[c]].item() for r, c in zip(rows, cols)])


def test_losses_match_a_direct_computation(mlm, mlm_ref, mtok):
    ex = score_masked(mlm, mlm_ref, TEXTS, tokenizer=mtok, steps=4, seed=1)
    assert len(ex) == len(TEXTS) and ex.has_reference and ex.keys == [text_hash(t) for t in TEXTS]
    for text, p in zip(TEXTS, ex.probes):
        assert p.mask.shape == (4, len(p.token_ids))
        assert np.all(np.isnan(p.nll_target[~p.mask])) and np.all(np.isfinite(p.nll_target[p.mask]))
        for t in range(4):
            np.testing.assert_allclose(p.nll_target[t, p.mask[t]], _direct_nll(mlm, mtok, text, p.mask[t]), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(p.nll_ref[t, p.mask[t]], _direct_nll(mlm_ref, mtok, text, p.mask[t]), rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_batch_composition(mlm, mlm_ref, mtok):
    alone = score_masked(mlm, mlm_ref, [TEXTS[2]], tokenizer=mtok, steps=16, seed=5, batch_tokens=64)
    mixed = score_masked(mlm, mlm_ref, [TEXTS[4], TEXTS[0], TEXTS[2], TEXTS[1]], tokenizer=mtok, steps=16, seed=5,
                         batch_tokens=100_000)
    a, b = alone.probes[0], mixed.probes[2]
    assert np.array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.nll_target, b.nll_target, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.nll_ref, b.nll_ref, rtol=1e-5, atol=1e-5)


class _LogitsOnly(torch.nn.Module):
    """A diffusion-LM-style module: forward(input_ids) -> a logits tensor, no attention mask."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids).logits


def test_generic_logits_interface_with_shift_and_no_attention_mask(mlm, mtok):
    wrapped = _LogitsOnly(mlm).eval()
    ex = score_masked(wrapped, None, TEXTS, tokenizer=mtok, steps=3, seed=2, attention_mask=False, shift_logits=True)
    assert ex.probes[0].nll_ref is None and not ex.has_reference
    for text, p in zip(TEXTS, ex.probes):
        for t in range(3):
            np.testing.assert_allclose(p.nll_target[t, p.mask[t]], _direct_nll(wrapped, mtok, text, p.mask[t], shift=True),
                                       rtol=1e-4, atol=1e-4)


def test_cache_roundtrip_and_reuse(tmp_path, mlm, mlm_ref, mtok):
    cache = StatsCache(tmp_path / "c")
    first = score_masked(mlm, None, TEXTS, tokenizer=mtok, cache=cache, steps=4)
    assert first.computed == len(TEXTS)
    # A fresh cache object on the same directory reads the shards; the target is not run again,
    # only the new reference.
    again = score_masked(mlm, mlm_ref, TEXTS, tokenizer=mtok, cache=StatsCache(tmp_path / "c"), steps=4)
    assert again.computed == len(TEXTS)  # the reference's texts
    third = score_masked(mlm, mlm_ref, TEXTS + [TEXTS[0]], tokenizer=mtok, cache=StatsCache(tmp_path / "c"), steps=4)
    assert third.computed == 0 and len(third) == len(TEXTS) + 1
    for p, q in zip(first.probes, third.probes):
        assert np.array_equal(p.mask, q.mask) and p.mask.dtype == bool
        np.testing.assert_array_equal(p.nll_target, q.nll_target)
        np.testing.assert_array_equal(p.token_ids, q.token_ids)
    # a plain ModelHandle of the same model finds the same records; cache_only never runs a model
    h = ModelHandle(mlm, mtok)
    only = score_masked(h, None, TEXTS, cache=StatsCache(tmp_path / "c"), steps=4, cache_only=True)
    assert only.computed == 0
    np.testing.assert_array_equal(only.probes[1].nll_target, first.probes[1].nll_target)
    with pytest.raises(CacheMissError, match="2 texts"):
        score_masked(h, None, TEXTS + ["new one", "another"], cache=StatsCache(tmp_path / "c"), steps=4, cache_only=True)
    # other settings are another namespace
    other = score_masked(mlm, None, TEXTS, tokenizer=mtok, cache=StatsCache(tmp_path / "c"), steps=4, seed=9)
    assert other.computed == len(TEXTS)


def test_load_from_directory(tmp_path, mlm, mtok):
    d = tmp_path / "mlm"
    mlm.save_pretrained(d, safe_serialization=True)
    mtok.save_pretrained(d)
    h = MaskedModelHandle(str(d))
    assert h.mask_behaviour() == (mtok.mask_token_id, False)
    assert h._model is None  # the mask behaviour comes without loading the weights
    ex = score_masked(str(d), None, TEXTS[:2], steps=2, options=LoadOptions(device="cpu", dtype="float32"))
    ref = score_masked(mlm, None, TEXTS[:2], tokenizer=mtok, steps=2)
    for p, q in zip(ex.probes, ref.probes):
        np.testing.assert_allclose(p.nll_target, q.nll_target, rtol=1e-5, atol=1e-5)


def test_errors(mlm, mtok):
    no_mask = train_tokenizer(TEXTS, vocab_size=280)
    no_mask.mask_token = None
    with pytest.raises(MaskedLMError, match="declares no mask token"):
        score_masked(mlm, None, TEXTS[:1], tokenizer=no_mask, steps=2)
    other = add_mask_token(train_tokenizer(TEXTS[:2], vocab_size=270))
    m2 = make_model(other, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64)
    with pytest.raises(MaskedLMError, match="another tokenizer"):
        score_masked(mlm, MaskedModelHandle(m2, other), TEXTS[:1], tokenizer=mtok, steps=2)


def test_empty_text_and_attack_input(mlm, mlm_ref, mtok):
    ex = score_masked(mlm, mlm_ref, ["", TEXTS[1]], tokenizer=mtok, steps=3)
    assert ex.probes[0].n_tokens == 0 and ex.probes[0].mask.shape == (3, 0)
    inp = masked_attack_input(["", TEXTS[1]], ex)
    assert len(inp) == 2 and len(inp.references) == 1 and inp.extras["masked"] is ex
    st = inp.target[1]
    p = ex.probes[1]
    assert len(st) == p.n_tokens
    seen = p.mask.any(axis=0)
    np.testing.assert_allclose(st.logprob[seen], -np.nanmean(p.nll_target[:, seen], axis=0), rtol=1e-6)
    assert np.all(np.isnan(st.logprob[~seen]))


def test_probe_validates_shapes():
    with pytest.raises(ValueError):
        MaskedProbe(np.arange(3), np.arange(3), np.arange(3), np.zeros((2, 4), bool), np.zeros((2, 4), np.float32))


def test_short_context_reference_truncates_both_and_keys_apart(mlm, mtok):
    short_ref = make_model(mtok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=16, seed=2).eval()
    cache = StatsCache(None)
    alone = score_masked(mlm, None, TEXTS, tokenizer=mtok, cache=cache, steps=3)
    paired = score_masked(mlm, short_ref, TEXTS, tokenizer=mtok, cache=cache, steps=3)
    assert paired.computed == len(TEXTS)  # the target's full-length records are not reused
    assert any("truncated" in n for n in paired.notes)
    assert max(p.n_tokens for p in paired.probes) == 16 < max(p.n_tokens for p in alone.probes)
    for p in paired.probes:
        assert np.isfinite(p.nll_ref[p.mask]).all()
