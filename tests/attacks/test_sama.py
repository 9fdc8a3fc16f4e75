"""SAMA and the DLM baselines: hand computations, seeding, batch independence; the diffusion testbed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import memlens.attacks.dlm_baselines  # noqa: F401  (registers dlm_loss, dlm_ref)
import memlens.attacks.sama as sama_mod
from memlens.attacks.base import AttackError, AttackInput, get_attack
from memlens.attacks.dlm_baselines import masked_mean
from memlens.attacks.sama import combine_steps, sample_subsets, step_losses, step_weights, vote_fraction
from memlens.cache import text_hash
from memlens.passes.masked import masked_attack_input, score_masked
from memlens.stats import MaskedExtras, MaskedProbe
from memlens.testbed.diffusion import add_mask_token, diffusion_loss, make_model, train_masked_diffusion, train_tokenizer

NAN = np.nan


def probe(mask, nll_t, nll_r=None) -> MaskedProbe:
    mask = np.asarray(mask, bool)
    n = mask.shape[1]
    f = lambda a: None if a is None else np.where(mask, np.asarray(a, np.float32), np.nan).astype(np.float32)  # noqa: E731
    r = f(nll_r)
    return MaskedProbe(np.arange(n), np.arange(n), np.arange(n) + 1, mask, f(nll_t), r, [] if r is None else [r])


def extras(texts, probes, refs=("ref",)) -> MaskedExtras:
    s = probes[0].n_steps
    return MaskedExtras(probes=list(probes), keys=[text_hash(t) for t in texts], alphas=np.linspace(0.05, 0.5, s),
                        settings={"steps": s}, references=list(refs))


def run(name, texts, ex, **params):
    return get_attack(name)(masked_attack_input(texts, ex), **params)


# ------------------------------------------------------------------ hand computations
def test_step_weights_by_hand():
    np.testing.assert_allclose(step_weights(3), [6 / 11, 3 / 11, 2 / 11])
    np.testing.assert_allclose(step_weights(16).sum(), 1.0)
    assert step_weights(16)[0] == pytest.approx(1 / sum(1 / i for i in range(1, 17)))
    np.testing.assert_allclose(step_weights(4, "uniform"), [0.25] * 4)


def test_vote_fraction_by_hand():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    r = np.array([2.0, 1.0, 3.0, 6.0])
    subsets = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    # Delta: (2+1)/2-(1+2)/2 = 0 (a tie votes 0), (1+3)/2-(2+3)/2 = -0.5, 4.5-3.5 = 1, 4-2.5 = 1.5
    assert vote_fraction(t, r, subsets) == 0.5
    assert vote_fraction(t, r, subsets[:2]) == 0.0
    assert np.isnan(vote_fraction(t, r, np.zeros((3, 0), np.int64)))


def test_combine_steps_by_hand():
    assert combine_steps([1.0, 0.5, 0.0]) == pytest.approx((6 / 11) * 1 + (3 / 11) * 0.5)
    assert combine_steps([1.0, 0.5, 0.0], "uniform") == pytest.approx(0.5)
    # a step that masked nothing is left out and the weights renormalised
    assert combine_steps([NAN, 1.0, 0.0]) == pytest.approx((3 / 11) / (5 / 11))
    assert np.isnan(combine_steps([NAN, NAN]))


def test_sample_subsets_rows_without_replacement():
    rng = np.random.default_rng(0)
    s = sample_subsets(30, 128, 10, rng)
    assert s.shape == (128, 10) and s.min() >= 0 and s.max() < 30
    assert all(len(set(row)) == 10 for row in s)
    assert len({tuple(sorted(r)) for r in s}) > 100  # subsets differ
    small = sample_subsets(4, 8, 10, rng)  # fewer masked positions than m: every subset is all of them
    assert small.shape == (8, 4) and all(sorted(r) == [0, 1, 2, 3] for r in small)


def test_sama_attack_with_fixed_subsets_matches_hand_computation(monkeypatch):
    texts = ["member-ish", "nonmember-ish"]
    mask = [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    p1 = probe(mask, [[1, 2, 3, 4, 0], [1, 1, 1, 1, 1]], [[2, 1, 3, 6, 0], [2, 2, 2, 2, 0]])
    p2 = probe(mask, [[3, 3, 3, 3, 0], [1, 1, 1, 1, 1]], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    fixed = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    monkeypatch.setattr(sama_mod, "sample_subsets", lambda k, n, m, rng: fixed)
    res = run("sama", texts, extras(texts, [p1, p2]))
    # text 1: beta_1 = 0.5 (see test_vote_fraction_by_hand), beta_2: every subset has ref 2 > target 1 -> 1
    # text 2: beta_1: ref 1 < target 3 -> 0; beta_2: ties -> 0
    w = step_weights(2)
    np.testing.assert_allclose(res.scores, [w[0] * 0.5 + w[1] * 1.0, 0.0])
    assert res.info["weights"] == pytest.approx(w.tolist())
    np.testing.assert_allclose(res.info["beta_mean_per_step"], [0.25, 0.5])
    uni = run("sama", texts, extras(texts, [p1, p2]), weighting="uniform")
    np.testing.assert_allclose(uni.scores, [0.75, 0.0])


def test_sama_defaults_and_subsets_larger_than_the_mask():
    spec = get_attack("sama")
    assert spec.model_kind == "masked" and spec.needs_reference
    assert spec.resolve_params({}) == {"num_subsets": 128, "subset_size": 10, "weighting": "inverse", "losses": "current",
                                       "seed": 0}
    # 3 masked positions < m = 10: every subset is the whole mask, so beta_t = 1[mean ref > mean target]
    texts = ["x"]
    p = probe([[1, 1, 1, 0], [1, 1, 1, 1]], [[1, 1, 1, 0], [1, 1, 1, 9]], [[2, 2, 2, 0], [2, 2, 2, 2]])
    assert run("sama", texts, extras(texts, [p])).scores[0] == pytest.approx(2 / 3)


def test_losses_first_keeps_the_first_steps_loss():
    mask = np.array([[1, 0], [1, 1]], bool)
    t = np.array([[1.0, NAN], [5.0, 2.0]])
    r = np.array([[2.0, NAN], [3.0, 2.5]])
    frozen = step_losses(mask, t, "first")
    np.testing.assert_array_equal(frozen, [[1.0, NAN], [1.0, 2.0]])
    texts = ["a"]
    ex = extras(texts, [probe(mask, t, r)])
    # current: step 2 compares (3+2.5)/2 with (5+2)/2 -> 0; first: (2+2.5)/2 with (1+2)/2 -> 1
    assert run("sama", texts, ex).scores[0] == pytest.approx(2 / 3)
    assert run("sama", texts, ex, losses="first").scores[0] == pytest.approx(1.0)
    indep = extras(texts, [probe([[1, 0], [0, 1]], [[1, 0], [0, 1]], [[1, 0], [0, 1]])])
    with pytest.raises(AttackError, match="nested"):
        run("sama", texts, indep, losses="first")


def test_subset_sampling_is_seeded_per_text_and_batch_independent():
    rng = np.random.default_rng(1)
    texts = [f"text {i}" for i in range(4)]
    probes = []
    for _ in texts:
        mask = np.zeros((6, 40), bool)
        for t in range(6):
            mask[t, rng.permutation(40)[: 5 + 5 * t]] = True
        probes.append(probe(mask, rng.gamma(2, 1, (6, 40)), rng.gamma(2, 1, (6, 40))))
    full = run("sama", texts, extras(texts, probes)).scores
    again = run("sama", texts, extras(texts, probes)).scores
    np.testing.assert_array_equal(full, again)
    order = [3, 1]
    part = run("sama", [texts[i] for i in order], extras([texts[i] for i in order], [probes[i] for i in order])).scores
    np.testing.assert_array_equal(part, full[order])
    other_seed = run("sama", texts, extras(texts, probes), seed=1).scores
    assert not np.array_equal(other_seed, full)
    # the subsets of a text depend on the text itself: the same losses under another text differ
    swapped = run("sama", ["other text"], extras(["other text"], [probes[0]])).scores
    assert swapped[0] != full[0]


def test_dlm_baselines_by_hand():
    texts = ["a", "b"]
    p1 = probe([[1, 0], [1, 1]], [[1, 0], [2, 4]], [[2, 0], [2, 5]])
    p2 = probe([[0, 1], [1, 1]], [[0, 3], [1, 1]], [[0, 1], [1, 1]])
    ex = extras(texts, [p1, p2])
    # dlm_loss: minus the mean over steps of each step's mean target loss
    np.testing.assert_allclose(run("dlm_loss", texts, ex).scores, [-(1 + 3) / 2, -(3 + 1) / 2])
    np.testing.assert_allclose(run("dlm_loss", texts, ex, agg="tokens").scores, [-7 / 3, -5 / 3])
    # dlm_ref: mean over steps of mean (ref - target)
    np.testing.assert_allclose(run("dlm_ref", texts, ex).scores, [(1 + 0.5) / 2, (-2 + 0) / 2])
    assert masked_mean(np.zeros((2, 2)), np.zeros((2, 2), bool)) != masked_mean(np.zeros((2, 2)), np.zeros((2, 2), bool))
    assert get_attack("dlm_loss").model_kind == "masked" and not get_attack("dlm_loss").needs_reference
    assert get_attack("dlm_ref").needs_reference


def test_errors_without_masked_data():
    texts = ["a"]
    ex = extras(texts, [probe([[1]], [[1.0]], [[2.0]])])
    inp = masked_attack_input(texts, ex)
    bare = AttackInput(texts=texts, target=inp.target, references=inp.references)
    with pytest.raises(AttackError, match="masked"):
        get_attack("sama")(bare)
    misaligned = AttackInput(texts=["b"], target=inp.target, references=inp.references, extras={"masked": ex})
    with pytest.raises(AttackError, match="another text"):
        get_attack("dlm_loss")(misaligned)
    no_ref = extras(texts, [probe([[1]], [[1.0]])], refs=())
    with pytest.raises(AttackError, match="reference"):
        run("sama", texts, no_ref)
    assert np.isfinite(run("dlm_loss", texts, no_ref).scores).all()


# ------------------------------------------------------------------ end to end on tiny models
TEXTS = [
    "Ada Lovelace was born on 10/12/1815 in London. Contact: ada@example.org, phone 555-010-1815.",
    "Alan Turing worked at Bletchley Park; his phone was 555-019-1912 and his e-mail alan@example.org.",
    "Grace Hopper (1906-12-09) lives in New York. She works as a rear admiral at the US Navy.",
    "Short one.",
]


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(TEXTS * 3, vocab_size=300)
    target = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=0).eval()
    ref = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=1).eval()
    return tok, target, ref


def test_a_texts_score_does_not_depend_on_batch_composition(tiny):
    tok, target, ref = tiny
    alone = score_masked(target, ref, [TEXTS[1]], tokenizer=tok, seed=3, batch_tokens=32)
    mixed_texts = [TEXTS[2], TEXTS[1], TEXTS[0], TEXTS[3]]
    mixed = score_masked(target, ref, mixed_texts, tokenizer=tok, seed=3, batch_tokens=100_000)
    for name in ("sama", "dlm_loss", "dlm_ref"):
        a = get_attack(name)(masked_attack_input([TEXTS[1]], alone)).scores[0]
        b = get_attack(name)(masked_attack_input(mixed_texts, mixed)).scores[1]
        # SAMA's votes are discrete: equal; the baselines' means agree to float rounding (batched matmuls)
        assert a == b if name == "sama" else a == pytest.approx(b, rel=1e-6), name
    s = get_attack("sama")(masked_attack_input(mixed_texts, mixed)).scores
    assert np.all((s >= 0) & (s <= 1))


def test_identical_models_vote_zero(tiny):
    tok, target, _ = tiny
    ex = score_masked(target, target, TEXTS, tokenizer=tok, seed=0)
    inp = masked_attack_input(TEXTS, ex)
    np.testing.assert_array_equal(get_attack("sama")(inp).scores, 0.0)  # Delta = 0 everywhere: ties vote 0
    np.testing.assert_allclose(get_attack("dlm_ref")(inp).scores, 0.0)


# ------------------------------------------------------------------ the diffusion testbed
def _tokenizer_without_mask(texts):
    """Like the PII testbed's tokenizer: byte-level BPE, <|endoftext|> as bos/eos/pad, no mask token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def test_add_mask_token_and_training_step():
    tok = _tokenizer_without_mask(TEXTS * 2)
    assert tok.mask_token is None
    n = len(tok)
    add_mask_token(tok)
    assert tok.mask_token_id == n and len(tok) == n + 1
    model = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64)
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([tok(TEXTS[0])["input_ids"][:20]])
    attn = torch.ones_like(ids)
    loss = diffusion_loss(model, ids, attn, torch.ones_like(ids, dtype=torch.bool), tok.mask_token_id, gen)
    assert torch.isfinite(loss) and loss.item() > 0
    log = train_masked_diffusion(model, TEXTS * 8, tok, epochs=3, lr=3e-3, batch_size=8, seed=0)
    assert log.steps == 12 and np.mean(log.losses[-3:]) < np.mean(log.losses[:3])


@pytest.mark.slow
def test_diffusion_testbed_sama_beats_dlm_loss():
    """Pretrain + fine-tune + score (48 members in tiers 1x/4x/16x, 100 non-members), no-shift,
    through memlens.audit as a user would."""
    import memlens
    from memlens.metrics import evaluate
    from memlens.testbed.diffusion import build_diffusion_testbed

    tb = build_diffusion_testbed("no-shift")
    result = memlens.audit(tb.target, [tb.reference], members=tb.members, nonmembers=tb.nonmembers, tokenizer=tb.tokenizer,
                           model_kind="masked", cache_dir=None, progress=False, n_bootstrap=0)
    sama, loss = result.metrics["sama"], result.metrics["dlm_loss"]
    assert sama.auc > loss.auc + 0.03
    assert sama.tpr["1%"] >= loss.tpr["1%"]
    labels = tb.labels
    tiers = np.r_[tb.member_tiers, np.zeros(len(tb.nonmembers), int)]
    sc = result.scores["sama"].to_numpy()
    auc = {k: evaluate(labels[(tiers == k) | (labels == 0)], sc[(tiers == k) | (labels == 0)], n_bootstrap=0).auc for k in (1, 4, 16)}
    assert auc[16] > auc[4] > auc[1]
    assert result.metrics["dlm_ref"].auc > loss.auc
