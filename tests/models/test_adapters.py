"""PEFT adapter directories as audit targets, with the adapter-disabled model as the reference."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(llama.path))  # so the adapter config names this base
    # init_lora_weights=False: a random (non-zero) adapter that visibly changes the model
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    d = tmp_path_factory.mktemp("adapter") / "lora"
    peft_model.save_pretrained(d)
    return d


def test_adapter_config_names_the_base(adapter_dir, llama):
    from memlens.models.adapters import adapter_base, is_adapter_dir

    assert is_adapter_dir(adapter_dir) and not is_adapter_dir(llama.path)
    assert adapter_base(adapter_dir) == str(llama.path)
    assert adapter_base(adapter_dir, "other") == "other"


def test_adapter_with_auto_reference_equals_merged_model_against_base(adapter_dir, llama, corpus):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from memlens import audit
    from memlens.models.adapters import adapter_handles

    members, nonmembers = corpus[:8], corpus[8:16]
    attacks = ["loss", "zlib", "mink", "ref", "informia"]
    target, refs = adapter_handles(adapter_dir, "auto", options=None)
    got = audit(target, refs, members=members, nonmembers=nonmembers, attacks=attacks, cache_dir=None, progress=False,
                n_bootstrap=0)

    base = AutoModelForCausalLM.from_pretrained(str(llama.path)).eval()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(llama.path)), str(adapter_dir)).merge_and_unload()
    want = audit(merged.eval(), base, members=members, nonmembers=nonmembers, attacks=attacks, tokenizer=llama.tokenizer,
                 cache_dir=None, progress=False, n_bootstrap=0)
    for a in attacks:
        np.testing.assert_allclose(got.scores[a].to_numpy(), want.scores[a].to_numpy(), rtol=1e-4, atol=1e-4, err_msg=a)
    # and the adapter matters: the target differs from its reference
    assert np.abs(got.scores["ref"].to_numpy()).max() > 1e-2
    assert got.settings["target"]["fingerprint"] != got.settings["references"][0]["fingerprint"]


def test_adapter_whose_base_is_missing(adapter_dir, llama, tmp_path):
    import shutil

    from memlens.models.adapters import load_adapter
    from memlens.models.loading import ModelLoadError

    moved = tmp_path / "moved"
    shutil.copytree(adapter_dir, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "no-such-base")
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="cannot be loaded.*pass --base") as e:
        load_adapter(moved)
    assert "\n" not in str(e.value)
    model, _ = load_adapter(moved, llama.path)  # an explicit base wins
    assert hasattr(model, "disable_adapter") and not model.training
    cfg["base_model_name_or_path"] = None
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="does not name its base"):
        load_adapter(moved)


def test_audit_takes_an_adapter_dir_and_reference_auto(adapter_dir, corpus):
    """memlens.audit(target=ADAPTER_DIR, references="auto") equals building the handles by hand."""
    from memlens import audit
    from memlens.models.adapters import adapter_handles

    members, nonmembers = corpus[:6], corpus[6:12]
    got = audit(target=adapter_dir, references="auto", members=members, nonmembers=nonmembers, attacks=["ref", "informia_token"],
                cache_dir=None, progress=False, n_bootstrap=0, device="cpu")
    t, refs = adapter_handles(adapter_dir, "auto")
    want = audit(t, refs, members=members, nonmembers=nonmembers, attacks=["ref", "informia_token"], cache_dir=None,
                 progress=False, n_bootstrap=0)
    for a in ("ref", "informia_token"):
        np.testing.assert_allclose(got.scores[a], want.scores[a], rtol=1e-6, atol=1e-7)
    assert got.settings["references"][0]["name"].endswith("(adapter disabled)")
