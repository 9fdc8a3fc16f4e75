"""Models and texts to statistics: paired and mismatched references, span alignment, safe loading."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import memlens
from memlens.cache import StatsCache
from memlens.models.causal import CausalScorer
from memlens.models.handle import ModelHandle
from memlens.models.loading import (
    ModelLoadError,
    context_length,
    fingerprint_files,
    fingerprint_tokenizer,
    load_model,
    load_tokenizer,
    pick_dtype,
    resolve_model,
)
from memlens.passes.causal import PassSettings, align_by_spans, compute_stats

TEXTS = [
    "Amber stone by the river, code 101.",
    "Copper harbor lantern ✓ café.",
    "The willow and the cedar and the quarry falcon went to the meadow!\nNext line.",
]


def settings(**kw) -> PassSettings:
    kw.setdefault("progress", False)
    return PassSettings(**kw)


# ---------------------------------------------------------------------------------------------
# align_by_spans
# ---------------------------------------------------------------------------------------------


def align(src, vals, dst):
    s = np.array(src).reshape(-1, 2)
    d = np.array(dst).reshape(-1, 2)
    return align_by_spans(s[:, 0], s[:, 1], np.asarray(vals, float), d[:, 0], d[:, 1])


def test_align_identity():
    spans = [(0, 3), (3, 7), (7, 8)]
    np.testing.assert_allclose(align(spans, [1.0, -2.0, 0.5], spans), [1.0, -2.0, 0.5])


def test_align_split_and_merge():
    # src "hello"=(0,5) -> dst "he"(0,2) + "llo"(2,5): shared by characters
    np.testing.assert_allclose(align([(0, 5)], [-5.0], [(0, 2), (2, 5)]), [-2.0, -3.0])
    # two src tokens merged into one dst token: summed
    np.testing.assert_allclose(align([(0, 2), (2, 5)], [-1.0, -4.0], [(0, 5)]), [-5.0])
    # straddling boundaries
    np.testing.assert_allclose(align([(0, 4), (4, 8)], [-4.0, -8.0], [(0, 2), (2, 6), (6, 8)]), [-2.0, -6.0, -4.0])


def test_align_zero_width_token_goes_to_next():
    np.testing.assert_allclose(align([(0, 0), (0, 3)], [-1.0, -3.0], [(0, 3)]), [-4.0])


def test_align_byte_tokens_sharing_a_span_preserve_sums():
    """Byte-level BPE splits a multi-byte character into tokens with the same character span."""
    # '✓' (3 UTF-8 bytes) is three src tokens spanning (4, 5); dst has it as one token.
    src = [(0, 4), (4, 5), (4, 5), (4, 5), (5, 7)]
    dst = [(0, 4), (4, 5), (5, 7)]
    out = align(src, [-1.0, -2.0, -3.0, -4.0, -5.0], dst)
    np.testing.assert_allclose(out, [-1.0, -9.0, -5.0])
    # and the other way round: one src token over three dst byte tokens
    back = align(dst, [-1.0, -9.0, -5.0], src)
    assert back.sum() == pytest.approx(-15.0)
    np.testing.assert_allclose(back[1:4], [-3.0, -3.0, -3.0])
    # identical byte tokenizations map one to one
    np.testing.assert_allclose(align(src, [-1.0, -2.0, -3.0, -4.0, -5.0], src), [-1.0, -2.0, -3.0, -4.0, -5.0])
    # two byte tokens (e.g. bytes 1-2 and byte 3 merged differently) against three: shared by bytes
    np.testing.assert_allclose(align([(4, 5), (4, 5)], [-2.0, -4.0], [(4, 5), (4, 5), (4, 5)]), [-4 / 3, -2.0, -8 / 3])


def test_align_gaps_preserve_sums():
    """Offsets that skip characters (e.g. trimmed whitespace) must not lose value."""
    out = align([(0, 5), (5, 9)], [-5.0, -4.0], [(0, 2), (3, 5), (6, 9)])
    assert out.sum() == pytest.approx(-9.0)
    # a src token entirely past the last dst token is kept (on the last one)
    out = align([(0, 3), (3, 4)], [-3.0, -1.0], [(0, 3)])
    np.testing.assert_allclose(out, [-4.0])


def test_align_random_tokenizations_preserve_sums():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 40))
        cuts_a = np.unique(np.r_[0, rng.integers(1, n, size=rng.integers(1, n)), n])
        cuts_b = np.unique(np.r_[0, rng.integers(1, n, size=rng.integers(1, n)), n])
        a = list(zip(cuts_a[:-1], cuts_a[1:]))
        b = list(zip(cuts_b[:-1], cuts_b[1:]))
        vals = rng.normal(size=len(a))
        out = align(a, vals, b)
        assert out.sum() == pytest.approx(vals.sum())
        # sums over runs of whole tokens that end at a common boundary are preserved too
        common = sorted(set(cuts_a) & set(cuts_b))
        for lo, hi in zip(common[:-1], common[1:]):
            sa = sum(v for (s, e), v in zip(a, vals) if lo <= s and e <= hi)
            sb = sum(v for (s, e), v in zip(b, out) if lo <= s and e <= hi)
            assert sb == pytest.approx(sa)


def test_align_real_tokenizers_preserve_sums(tokenizer, other_tokenizer):
    from memlens.models.causal import tokenize

    for text in TEXTS:
        a = tokenize(tokenizer, text).spans
        b = tokenize(other_tokenizer, text).spans
        assert a != b  # the tokenizations really differ
        vals = np.linspace(-1, -3, len(b))
        out = align(b, vals, a)
        assert out.sum() == pytest.approx(vals.sum())


# ---------------------------------------------------------------------------------------------
# References: shared tokenizer (paired pass) and another tokenizer (span-aligned fallback)
# ---------------------------------------------------------------------------------------------


def test_paired_reference_comparison(gpt2, gpt2_ref, gpt2_ref2, tokenizer):
    t = ModelHandle(gpt2.model, tokenizer)
    refs = [ModelHandle(gpt2_ref.model, tokenizer), ModelHandle(gpt2_ref2.model, tokenizer)]
    b = compute_stats(t, refs, TEXTS, StatsCache(None), settings())
    assert b.comparison.kl is not None and b.comparison.note == ""
    assert [v.name for v in b.references] == [r.name for r in refs]
    direct = CausalScorer([gpt2.model, gpt2_ref.model, gpt2_ref2.model], tokenizer, progress=False).score(TEXTS)
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(b.comparison.kl[i], direct[i]["pair"]["kl_ref_target"], atol=1e-6)
        np.testing.assert_allclose(b.comparison.log_ratio[i], direct[i]["pair"]["log_ratio"], atol=1e-6)
        np.testing.assert_allclose(b.references[1].stats[i].logprob, direct[i]["stats"][2].logprob, atol=1e-6)


def test_reference_with_other_tokenizer(gpt2, other_vocab_ref, tokenizer, other_tokenizer, tmp_path):
    assert fingerprint_tokenizer(tokenizer) != fingerprint_tokenizer(other_tokenizer)
    t = ModelHandle(str(gpt2.path))
    r = ModelHandle(str(other_vocab_ref.path))
    b = compute_stats(t, [r], TEXTS, StatsCache(tmp_path), settings())
    assert b.comparison is not None and b.comparison.kl is None
    assert "another tokenizer" in b.comparison.note and b.notes
    for i, text in enumerate(TEXTS):
        ts, rs = b.target[i], b.references[0].stats[i]
        assert len(b.comparison.log_ratio[i]) == len(ts)
        assert len(rs) == len(other_tokenizer(text, add_special_tokens=False)["input_ids"])  # in its own tokens
        aligned = align_by_spans(rs.span_start, rs.span_end, rs.logprob, ts.span_start, ts.span_end)
        np.testing.assert_allclose(b.comparison.log_ratio[i], ts.logprob - aligned, atol=1e-6)
        # the reference's total log-probability is preserved by the alignment
        assert aligned.sum() == pytest.approx(float(rs.logprob.sum(dtype=np.float64)), abs=1e-4)
    res = memlens.audit(gpt2.model, other_vocab_ref.model, members=TEXTS[:2], nonmembers=TEXTS[2:], tokenizer=tokenizer,
                        reference_tokenizers=[other_tokenizer], attacks=["ref", "informia_token"], cache_dir=None,
                        n_bootstrap=0, progress=False, device="cpu")
    assert res.attack_info["informia_token"]["kl_term"] is False
    assert "another tokenizer" in res.attack_info["informia_token"]["note"]


def test_mixed_references_use_paired_ones_for_tokens(gpt2, gpt2_ref, other_vocab_ref, tokenizer, other_tokenizer):
    t = ModelHandle(gpt2.model, tokenizer)
    refs = [ModelHandle(gpt2_ref.model, tokenizer), ModelHandle(other_vocab_ref.model, other_tokenizer)]
    b = compute_stats(t, refs, TEXTS, StatsCache(None), settings())
    assert b.comparison.kl is not None
    assert "sharing the target's tokenizer" in b.comparison.note
    assert len(b.references) == 2


def test_shorter_context_reference_does_not_poison_the_target_cache(gpt2, gpt2_short, tokenizer, corpus):
    """A paired pass windows to the shorter context; a later target-only pass must not reuse it."""
    long_text = " ".join(corpus[:3])
    cache = StatsCache(None)
    t = ModelHandle(gpt2.model, tokenizer)
    compute_stats(t, [ModelHandle(gpt2_short.model, tokenizer)], [long_text], cache, settings())
    alone = compute_stats(t, [], [long_text], cache, settings())
    fresh = compute_stats(t, [], [long_text], StatsCache(None), settings())
    np.testing.assert_allclose(alone.target[0].logprob, fresh.target[0].logprob, atol=1e-6)


def test_in_memory_model_needs_tokenizer(gpt2):
    with pytest.raises(ValueError, match="tokenizer"):
        ModelHandle(gpt2.model)


# ---------------------------------------------------------------------------------------------
# Locating and loading models safely
# ---------------------------------------------------------------------------------------------


def test_load_saved_model_and_tokenizer(gpt2, tokenizer):
    ms = resolve_model(gpt2.path)
    assert ms.path == gpt2.path and ms.gguf_file is None
    m = load_model(ms, device="cpu", dtype="float32")
    assert not m.training
    ids = torch.tensor([[0, 5, 9, 20]])
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=ids).logits, gpt2.model(input_ids=ids).logits)
    tok = load_tokenizer(ms)
    assert tok("amber stone")["input_ids"] == tokenizer("amber stone")["input_ids"]
    assert context_length(m) == 64


@pytest.fixture
def pickle_only_dir(gpt2, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    for f in gpt2.path.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, d / f.name)
    torch.save(gpt2.model.state_dict(), d / "pytorch_model.bin")
    return d


def test_pickle_only_checkpoint_is_refused(pickle_only_dir):
    ms = resolve_model(pickle_only_dir)
    with pytest.raises(ModelLoadError, match="pickle-based weights.*pytorch_model.bin.*--allow-pickle"):
        load_model(ms, device="cpu")
    # through the public API too, before any weights are read
    with pytest.raises(ModelLoadError, match="pickle"):
        ModelHandle(str(pickle_only_dir)).model


def test_pickle_only_checkpoint_loads_when_allowed(pickle_only_dir, gpt2):
    m = load_model(resolve_model(pickle_only_dir, allow_pickle=True), device="cpu", dtype="float32", allow_pickle=True)
    ids = torch.tensor([[0, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=ids).logits, gpt2.model(input_ids=ids).logits)


def test_directory_without_weights(gpt2, tmp_path):
    d = tmp_path / "noweights"
    d.mkdir()
    shutil.copy(gpt2.path / "config.json", d / "config.json")
    with pytest.raises(ModelLoadError, match="holds no weight files"):
        load_model(resolve_model(d), device="cpu")


def test_missing_paths_give_clear_errors(tmp_path):
    for spec in (str(tmp_path / "nope"), "./no/such/model", "~/no-such-model-dir", "a/b/c", "model.gguf"):
        with pytest.raises(ModelLoadError, match="does not exist"):
            resolve_model(spec)


def test_unknown_hub_id_offline_gives_clear_error():
    with pytest.raises(ModelLoadError, match="cannot get model 'memlens-test/no-such-model'.*local directory"):
        resolve_model("memlens-test/no-such-model")


def test_not_a_model_directory(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(d)
    (d / "w.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="--gguf-file w.gguf"):
        resolve_model(d)
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model(f)


def test_bad_device_and_dtype():
    from memlens.models.loading import pick_device

    with pytest.raises(ModelLoadError, match="unknown dtype"):
        pick_dtype("float8", torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="unknown device"):
        pick_device("gpu0")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_fingerprints_follow_content(gpt2, gpt2_ref, tmp_path):
    a = fingerprint_files(resolve_model(gpt2.path))
    assert a == fingerprint_files(resolve_model(gpt2.path))
    assert a != fingerprint_files(resolve_model(gpt2_ref.path))
    copy = tmp_path / "copy"
    shutil.copytree(gpt2.path, copy)
    assert fingerprint_files(resolve_model(copy)) == a  # content, not location
    cfg = json.loads((copy / "config.json").read_text())
    cfg["n_positions"] = 32
    (copy / "config.json").write_text(json.dumps(cfg))
    assert fingerprint_files(resolve_model(copy)) != a


def test_audit_keeps_references_without_their_own_tokenizer(gpt2, gpt2_ref, gpt2_ref2, tokenizer):
    """reference_tokenizers shorter than references: the rest use the target's tokenizer, none dropped."""
    from memlens.audit import _handles
    from memlens.models.handle import LoadOptions

    t, refs = _handles(gpt2.model, [gpt2_ref.model, gpt2_ref2.model], tokenizer, [tokenizer], None, LoadOptions())
    assert len(refs) == 2
    with pytest.raises(ValueError, match="reference tokenizers"):
        _handles(gpt2.model, [gpt2_ref.model], tokenizer, [tokenizer, tokenizer], None, LoadOptions())


def test_audit_takes_grouped_settings_like_its_keywords(gpt2, gpt2_ref, tokenizer):
    """load= / pass_settings= / evaluation= give the same audit as the single keywords; both at once is an error."""
    from memlens.audit import EvalSettings
    from memlens.data import DataError
    from memlens.passes.causal import PassSettings

    common = dict(members=TEXTS[:2], nonmembers=TEXTS[2:], tokenizer=tokenizer, attacks=["loss", "informia"], cache_dir=None)
    a = memlens.audit(gpt2.model, gpt2_ref.model, **common, device="cpu", max_length=16, stride=8, n_bootstrap=20, seed=3,
                      progress=False)
    pass_settings = PassSettings(max_length=16, stride=8, progress=False)
    b = memlens.audit(gpt2.model, gpt2_ref.model, **common, load=memlens.LoadOptions(device="cpu"), pass_settings=pass_settings,
                      evaluation=EvalSettings(n_bootstrap=20, seed=3))
    assert a.scores.equals(b.scores)
    assert a.metrics["informia"].to_dict() == b.metrics["informia"].to_dict()
    assert a.settings == b.settings
    assert pass_settings.pair_reductions == ("informia",) and pass_settings.pair_settings == {}  # the caller's object is untouched
    with pytest.raises(DataError, match="max_length"):
        memlens.audit(gpt2.model, gpt2_ref.model, **common, max_length=8, pass_settings=PassSettings(max_length=16))
