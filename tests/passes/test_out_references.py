"""Token-level InfoRMIA with split references: q per text from the references OUT for it, against brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import memlens
from memlens.cache import StatsCache, text_hash
from memlens.models.handle import ModelHandle
from memlens.passes.causal import PassSettings, compute_stats, out_reference_comparison

TEXTS = ["Amber stone by the river, code 101.", "Copper harbor lantern by the willow.", "The cedar and the quarry falcon went home."]
POP = ["Meadow ember and cobalt walnut, code 77.", "Velvet canyon juniper at the harbor."]
# rows: references, columns: texts (True = the reference trained on the text)
MEMBERSHIP = np.array([[True, False, False], [False, True, False], [True, False, False]])


def brute(target, refs, text, out):
    """log p(x_t) - log q(x_t) and D_KL(q || p) with q = mean of the OUT references' softmax, from the raw models."""
    tok = target.tokenizer
    ids = torch.tensor([[0] + tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        lp = torch.log_softmax(target.model(ids).logits[0, :-1].double(), -1)
        q = torch.stack([torch.softmax(refs[r].model(ids).logits[0, :-1].double(), -1) for r in out]).mean(0)
    x = ids[0, 1:]
    lr = lp.gather(-1, x[:, None])[:, 0] - q.log().gather(-1, x[:, None])[:, 0]
    kl = (q * (q.log() - lp)).sum(-1)
    return lr.numpy(), kl.numpy(), ids[0, 1:].numpy()


@pytest.fixture()
def models(gpt2, gpt2_ref, gpt2_ref2, llama):
    return gpt2, [gpt2_ref, gpt2_ref2, llama]


def test_out_reference_comparison_matches_brute_force(models, tmp_path):
    target, refs = models
    th = ModelHandle(target.model, target.tokenizer)
    rh = [ModelHandle(r.model, target.tokenizer, name=f"r{j}") for j, r in enumerate(refs)]
    cache = StatsCache(tmp_path)
    s = PassSettings(progress=False)
    comp = out_reference_comparison(th, rh, TEXTS, MEMBERSHIP, cache, s)
    full = compute_stats(th, rh, TEXTS, cache, s).comparison
    for i, text in enumerate(TEXTS):
        out = [j for j in range(3) if not MEMBERSHIP[j, i]]
        lr, kl, ids = brute(target, refs, text, out)
        np.testing.assert_allclose(comp.log_ratio[i], lr, atol=2e-4)
        np.testing.assert_allclose(comp.kl[i], kl, atol=2e-4)
        # the all-reference mixture (what the audit uses without splits) is another q
        lr_all, _, _ = brute(target, refs, text, [0, 1, 2])
        np.testing.assert_allclose(full.log_ratio[i], lr_all, atol=2e-4)
        if MEMBERSHIP[:, i].any():  # a text OUT for every reference has the same q either way
            assert not np.allclose(comp.log_ratio[i], lr_all, atol=1e-3)


def test_audit_with_splits_uses_out_q_for_informia_token(models, tmp_path):
    target, refs = models
    splits = {"key": "sha256", "members": {f"r{j}": [text_hash(t) for t, m in zip(TEXTS, MEMBERSHIP[j]) if m] for j in range(3)}}
    rh = [ModelHandle(r.model, target.tokenizer, name=f"r{j}") for j, r in enumerate(refs)]
    kw = dict(members=TEXTS[:2], nonmembers=TEXTS[2:], population=POP, attacks="informia_token,rmia,informia", tokenizer=target.tokenizer,
              cache_dir=tmp_path, n_bootstrap=0, progress=False)
    res = memlens.audit(target.model, rh, reference_splits=splits, **kw)
    plain = memlens.audit(target.model, rh, **kw)
    for i, text in enumerate(TEXTS):
        lr, kl, _ = brute(target, refs, text, [j for j in range(3) if not MEMBERSHIP[j, i]])
        # informia_token's per-token score is (log-ratio + KL) in bits
        np.testing.assert_allclose(res.token_scores["informia_token"][i], (lr + kl) / np.log(2), atol=5e-4)
    assert not np.allclose(res.scores["informia_token"], plain.scores["informia_token"])
    assert res.settings["attack_modes"]["rmia"] == "online" and plain.settings["attack_modes"]["rmia"] == "offline, a=1"
    assert res.settings["reference_splits"]["sha256"] and "reference_splits" not in plain.settings
