"""`memlens audit --model-kind masked` on a tiny masked LM saved with save_pretrained."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from memlens.cli import app

os.environ["HF_HUB_OFFLINE"] = "1"
runner = CliRunner()


@pytest.fixture(scope="module")
def masked_models(tmp_path_factory):
    from memlens.testbed.diffusion import add_mask_token, make_model, synthetic_bios, train_masked_diffusion, train_tokenizer

    root = tmp_path_factory.mktemp("masked")
    texts = synthetic_bios(24, seed=5)
    tok = train_tokenizer(synthetic_bios(200, seed=6), 300)
    add_mask_token(tok)
    ref = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, seed=0)
    target = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, seed=0)
    train_masked_diffusion(target, texts[:12] * 4, tok, epochs=2, lr=3e-3, batch_size=8, seed=1)
    for name, m in (("ref", ref), ("target", target)):
        m.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "m.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:12]))
    (root / "n.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[12:]))
    return root


def test_audit_masked_runs_sama_and_baselines(masked_models, tmp_path):
    r = runner.invoke(app, ["audit", "--model-kind", "masked", "--target", str(masked_models / "target"),
                            "--reference", str(masked_models / "ref"), "--members", str(masked_models / "m.jsonl"),
                            "--nonmembers", str(masked_models / "n.jsonl"), "--mask-steps", "4", "--out", str(tmp_path / "o"),
                            "--cache-dir", str(tmp_path / "c"), "--bootstrap", "0", "--device", "cpu", "--no-report"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert set(res["metrics"]) == {"sama", "dlm_loss", "dlm_ref"}
    assert res["settings"]["model_kind"] == "masked"
    for v in res["metrics"].values():
        assert 0.0 <= v["auc"] <= 1.0


def test_causal_attack_on_masked_model_is_refused(masked_models, tmp_path):
    r = runner.invoke(app, ["audit", "--model-kind", "masked", "--target", str(masked_models / "target"),
                            "--members", str(masked_models / "m.jsonl"), "--nonmembers", str(masked_models / "n.jsonl"),
                            "--attacks", "loss", "--out", str(tmp_path / "o"), "--no-cache"])
    assert r.exit_code == 2
    assert "--model-kind causal" in r.output
