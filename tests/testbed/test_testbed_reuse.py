"""Rerunning a testbed build reuses models of the same configuration; interrupted training resumes."""
import json
import os

import torch

from memlens.testbed import build
from memlens.testbed.train import train_lm, training_fingerprint

os.environ["HF_HUB_OFFLINE"] = "1"

TINY = {"members_per_tier": 2, "n_background_docs": 24, "public_text_chars": 4000, "vocab_size": 400, "n_layer": 1,
        "d_model": 32, "n_head": 2, "d_ff": 64, "context": 128, "pretrain_epochs": 1, "finetune_epochs": 1}


def _summary(paths):
    return json.loads((paths.models / "training.json").read_text())


def test_second_build_reuses_models_and_a_changed_config_retrains(tmp_path):
    paths = build(tmp_path, quick=True, progress=False, **TINY)
    first = _summary(paths)
    assert first["trained"] == ["base", "target"] and first["reused"] == []
    weights = (paths.target / "model.safetensors").read_bytes()
    again = build(tmp_path, quick=True, progress=False, **TINY)
    second = _summary(again)
    assert second["reused"] == ["base", "target"] and second["trained"] == []
    assert second["fingerprint"] == first["fingerprint"]
    assert (paths.target / "model.safetensors").read_bytes() == weights
    # another fine-tuning setting: the base is the same model, the target is not
    changed = build(tmp_path, quick=True, progress=False, **{**TINY, "finetune_lr": 1e-3})
    third = _summary(changed)
    assert third["fingerprint"] != first["fingerprint"] and "target" in third["trained"]
    # retrain=True trains everything even when nothing changed
    fresh = build(tmp_path, quick=True, progress=False, retrain=True, **{**TINY, "finetune_lr": 1e-3})
    assert _summary(fresh)["trained"] == ["base", "target"]


def test_fingerprint_follows_the_data(tmp_path):
    paths = build(tmp_path / "a", quick=True, train=False, **TINY)
    other = build(tmp_path / "b", quick=True, train=False, **{**TINY, "seed": 1})
    assert training_fingerprint(paths, paths.config()) != training_fingerprint(other, other.config())
    same = build(tmp_path / "c", quick=True, train=False, **TINY)
    assert training_fingerprint(paths, paths.config()) == training_fingerprint(same, same.config())


class _Stop(Exception):
    pass


def _tiny_model(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def test_interrupted_training_resumes_from_the_last_epoch_and_ends_where_a_full_run_ends(tmp_path, monkeypatch):
    seqs = [[1 + (i * 7 + j) % 40 for j in range(10)] for i in range(16)]
    kw = dict(epochs=3, lr=1e-2, batch_size=4, seed=0, progress=False)
    full = _tiny_model()
    train_lm(full, seqs, **kw)

    ckpt = tmp_path / "ckpt.pt"
    model = _tiny_model()
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def step_then_stop(self, *a, **k):  # a Ctrl-C in the third epoch (4 batches an epoch)
        calls["n"] += 1
        if calls["n"] == 10:
            raise _Stop
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_stop)
    try:
        train_lm(model, seqs, checkpoint=ckpt, **kw)
    except _Stop:
        pass
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["epochs_done"] == 2
    resumed = _tiny_model(seed=5)  # other initial weights: everything must come from the checkpoint
    stats = train_lm(resumed, seqs, checkpoint=ckpt, **kw)
    assert stats["resumed_after_epoch"] == 2 and stats["steps"] == 12 and not ckpt.exists()
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
