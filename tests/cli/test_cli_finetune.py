"""The fine-tune audit from the command line: a PEFT adapter directory as --target with --reference
auto, --base, --score on prompt/completion records, and --canaries exposure in results.json and the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from memlens.cli import app

pytest.importorskip("peft")
runner = CliRunner()


@pytest.fixture(scope="module")
def lora(tmp_path_factory, llama, corpus):
    """A tiny Llama + random (non-zero) LoRA saved with peft, and member / non-member files."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("cli-lora")
    base = AutoModelForCausalLM.from_pretrained(str(llama.path))
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(root / "lora")
    for name, texts in (("members", corpus[:8]), ("nonmembers", corpus[8:16])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return root


def _args(root, out, target, *extra):
    return ["audit", "--target", str(target), "--members", str(root / "members.jsonl"), "--nonmembers",
            str(root / "nonmembers.jsonl"), "--out", str(out), "--cache-dir", str(root / "cache"), "--bootstrap", "0",
            "--device", "cpu", "--no-report", "--attacks", "loss,mink,ref,informia,informia_token", *extra]


def test_adapter_dir_with_reference_auto_equals_merged_model_against_base(lora, llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = runner.invoke(app, _args(lora, tmp_path / "a", lora / "lora", "--reference", "auto"))
    assert r.exit_code == 0, r.output
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(llama.path)), str(lora / "lora")).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    llama.tokenizer.save_pretrained(tmp_path / "merged")
    r = runner.invoke(app, _args(lora, tmp_path / "m", tmp_path / "merged", "--reference", str(llama.path)))
    assert r.exit_code == 0, r.output
    got, want = pd.read_csv(tmp_path / "a" / "scores.csv"), pd.read_csv(tmp_path / "m" / "scores.csv")
    for a in ("loss", "mink", "ref", "informia", "informia_token"):
        np.testing.assert_allclose(got[a], want[a], rtol=1e-4, atol=1e-4, err_msg=a)
    assert np.abs(got["ref"]).max() > 1e-2  # the adapter changes the model
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["settings"]["references"][0]["name"].endswith("(adapter disabled)")
    assert res["settings"]["score"]["mode"] == "all"

    # --base overrides the adapter config's base (here: the same model, so the same scores)
    r = runner.invoke(app, _args(lora, tmp_path / "b", lora / "lora", "--reference", "auto", "--base", str(llama.path),
                                 "--attacks", "ref"))
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "b" / "scores.csv")["ref"], got["ref"], rtol=1e-5, atol=1e-6)


def test_reference_auto_needs_an_adapter_and_base_needs_one_too(lora, llama, tmp_path):
    r = runner.invoke(app, _args(lora, tmp_path / "x", llama.path, "--reference", "auto"))
    assert r.exit_code == 2 and "--reference auto needs a PEFT adapter directory" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    r = runner.invoke(app, _args(lora, tmp_path / "y", llama.path, "--base", str(llama.path)))
    assert r.exit_code == 2 and "--base is the base model of a PEFT adapter" in r.output


def test_score_and_extract_take_an_adapter(lora, tmp_path):
    r = runner.invoke(app, ["score", "--target", str(lora / "lora"), "--reference", "auto", str(lora / "members.jsonl"),
                            "--cache-dir", str(tmp_path / "c"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "8 texts" in r.output and "8 computed" in r.output
    secret = "Velvet walnut, code 123."
    at = secret.index("123")
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "s", "text": secret, "label": 1,
                                                  "pii": [{"type": "code", "start": at, "end": at + 3}]}) + "\n")
    r = runner.invoke(app, ["extract", "--target", str(lora / "lora"), str(tmp_path / "s.jsonl"), "--device", "cpu",
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e" / "extraction.json").read_text())["members"]["n"] == 1


def test_score_completion_and_canaries_in_results_and_report(lora, llama, tmp_path):
    from memlens.canary import make_canaries

    rows = [{"id": f"r{i}", "prompt": f"Q{i}: {t[:20]}\n", "completion": t[20:], "label": i % 2} for i, t in
            enumerate(json.loads(ln)["text"] for ln in (lora / "members.jsonl").read_text().splitlines())]
    (tmp_path / "pc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_canaries("{=Aaaa}'s pin is {dd}", repetitions=[1, 4], per_count=1, held_out=1, seed=0).save(tmp_path / "canaries.json")
    r = runner.invoke(app, ["audit", "--target", str(lora / "lora"), "--reference", "auto", "--data", str(tmp_path / "pc.jsonl"),
                            "--canaries", str(tmp_path / "canaries.json"), "--attacks", "loss,minkpp,informia_token",
                            "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--bootstrap", "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "scored: completion tokens only" in r.output and "canary exposure" in r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["settings"]["score"] == {"mode": "completion", "implied_by_records": True, "spans": {
        "loss": "completion", "minkpp": "completion", "informia_token": "completion"},
        "record_shapes": {"prompt_completion": 8, "chat": 0, "text": 0}}
    exp = res["canary_exposure"]
    assert set(exp["by_repetition"]) == {"0", "1", "4"} and len(exp["canaries"]) == 3
    assert exp["settings"]["target"] == str(lora / "lora")
    assert all(0 <= c["exposure"] <= np.log2(100) + 1e-9 for c in exp["canaries"])  # |R| = 100: exact ranks
    html = (tmp_path / "o" / "report.html").read_text()
    assert 'id="exposure"' in html and "held out" in html

    # the same statistics, every token: no model runs (attack = cache only)
    r = runner.invoke(app, ["attack", "--target", str(lora / "lora"), "--reference", "auto", "--data", str(tmp_path / "pc.jsonl"),
                            "--attacks", "loss", "--score", "all", "--out", str(tmp_path / "o2"), "--cache-dir", str(tmp_path / "c"),
                            "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert "scored: every token; --score all" in r.output
