"""Blind baseline and set inference on a real (tiny-model) AuditResult: the API path the CLI will wire."""
from __future__ import annotations

import numpy as np

import memlens
from memlens.blind import blind_audit
from memlens.setinfer import set_inference_audit


def test_blind_and_set_inference_of_an_audit(gpt2, gpt2_ref, tokenizer, corpus):
    res = memlens.audit(gpt2.model, gpt2_ref.model, members=corpus[:16], nonmembers=corpus[16:32], tokenizer=tokenizer,
                        attacks=["loss", "zlib", "ref"], cache_dir=None, n_bootstrap=0, progress=False, device="cpu")
    b = blind_audit(res, n_bootstrap=100)
    assert b.best_attack in res.metrics and b.best_attack_auc == max(m.auc for m in res.metrics.values())
    assert b.scores.shape == (32,) and 0 <= b.metrics.auc <= 1
    s = set_inference_audit(res)
    # Only the attack columns are combined (id/label are not scores); the random models memorized nothing.
    assert s.attacks == ["loss", "zlib", "ref"] and (s.n_suspect, s.n_unseen) == (16, 16)
    assert 0 < s.p_value <= 1 and np.isfinite(s.statistic)
    assert set(s.to_dict()) >= {"p_value", "detected", "attacks", "summary"}
