"""MemlensCallback: a membership audit inside transformers.Trainer that never changes training."""
from __future__ import annotations

import logging
import math
import random

import pytest

from tests.conftest import make_corpus, make_gpt2, make_tokenizer


def _trainer(tmp_path, name, tok, train_texts, eval_texts, callbacks=(), max_steps=6):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    # dropout on and several epochs: a callback that consumed the RNG would change dropout masks
    # and the data order, and with them the loss curve
    model = make_gpt2(len(tok), seed=0, init=0.02)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.1
    for m in model.modules():
        if m.__class__.__name__ == "Dropout":
            m.p = 0.1
    def enc(texts):
        return [{"input_ids": tok(t)["input_ids"]} for t in texts]
    args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=8, per_device_eval_batch_size=16,
                             max_steps=max_steps, learning_rate=3e-3, eval_strategy="steps", eval_steps=3, logging_steps=1,
                             save_strategy="no", report_to=[], use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0,
                             disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=enc(train_texts), eval_dataset=enc(eval_texts),
                   data_collator=DataCollatorForLanguageModeling(tok, mlm=False), processing_class=tok,
                   callbacks=list(callbacks))


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    corpus = make_corpus(seed=11, n=200, words=6)
    rng.shuffle(corpus)
    return corpus[:100], corpus[100:]  # members (trained on), held out


@pytest.fixture(scope="module")
def tok(texts):
    return make_tokenizer(texts[0] + texts[1], vocab_size=300)


def _losses(trainer):
    return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]


@pytest.mark.slow
def test_callback_logs_metrics_and_leaves_training_unchanged(tmp_path, texts, tok):
    from memlens.integrations import MemlensCallback

    members, held_out = texts
    plain = _trainer(tmp_path, "plain", tok, members, held_out[:16])
    plain.train()
    cb = MemlensCallback(members, held_out, attacks=["loss", "zlib", "mink"])
    audited = _trainer(tmp_path, "audited", tok, members, held_out[:16], callbacks=[cb])
    audited.train()

    assert len(_losses(plain)) == 6
    assert _losses(audited) == _losses(plain)  # bit-identical loss curve
    assert audited.model.training == plain.model.training

    logged = [h for h in audited.state.log_history if "memlens/loss/auc" in h]
    # two evaluations (steps 3 and 6); the end of training, right after the step-6 evaluation, has
    # the same weights: not audited or logged twice
    assert [h["step"] for h in logged] == [3, 6]
    for h in logged:
        for attack in ("loss", "zlib", "mink"):
            assert 0.0 <= h[f"memlens/{attack}/auc"] <= 1.0
            assert 0.0 <= h[f"memlens/{attack}/tpr@1%"] <= 1.0  # 100 held-out texts resolve 1%
        assert "memlens/loss/tpr@0.1%" not in h  # 100 held-out texts cannot resolve 0.1%
    # the found-on-the-stack trainer was used: logs went through trainer.log (epoch added there)
    assert all("epoch" in h for h in logged)
    assert logged[0]["memlens/loss/auc"] != logged[-1]["memlens/loss/auc"]  # each evaluation saw new weights
    out = tmp_path / "audited"
    assert (out / "report.html").stat().st_size > 1000
    assert (out / "memlens" / "results.json").is_file()
    assert len(cb.history) == 2


def test_attach_and_reference(tmp_path, texts, tok):
    from memlens.integrations import MemlensCallback

    members, held_out = texts
    from memlens.canary import make_canaries

    ref = make_gpt2(len(tok), seed=5, init=0.02)
    canaries = make_canaries("{=Aa} code {dd}", repetitions=[2], per_count=2, held_out=2, seed=0)
    cb = MemlensCallback(members[:20], held_out[:20], reference=ref, attacks=["loss", "ref"], report=False, cache_dir=None,
                         canaries=canaries)
    trainer = cb.attach(_trainer(tmp_path, "attached", tok, members, held_out[:8], max_steps=3))
    assert cb.trainer is trainer and cb in trainer.callback_handler.callbacks
    trainer.train()
    logged = [h for h in trainer.state.log_history if "memlens/ref/auc" in h]
    assert len(logged) == 1  # evaluation at step 3; training ends there with the same weights
    for h in logged:  # the canaries are not in this training set: any exposure is in 0..log2(100)
        assert set(h) >= {"memlens/exposure/rep0", "memlens/exposure/rep2"}
        assert all(0.0 <= h[f"memlens/exposure/rep{k}"] <= math.log2(100) for k in (0, 2))
    assert [c["id"] for c in cb.last_result.extra["canary_exposure"]["canaries"]] == [c.id for c in canaries.canaries]
    assert not (tmp_path / "attached" / "report.html").exists()


def test_prompt_completion_members_score_the_completion(tmp_path, texts, tok):
    """Members given as prompt/completion records: the callback's audit scores their completions only."""
    from memlens.integrations import MemlensCallback

    members, held_out = texts

    def pc(ts):
        return [{"prompt": t[:12], "completion": t[12:]} for t in ts[:10]]

    cb = MemlensCallback(pc(members), pc(held_out), attacks=["loss"], report=False, cache_dir=None)
    trainer = cb.attach(_trainer(tmp_path, "pc", tok, members, held_out[:8], max_steps=3))
    trainer.train()
    assert cb.last_result.settings["score"]["mode"] == "completion"
    assert [h for h in trainer.state.log_history if "memlens/loss/auc" in h]
    from memlens.errors import DataError

    with pytest.raises(DataError, match="--score must be one of"):
        MemlensCallback(pc(members), pc(held_out), score="prompt")


def test_sharded_models_are_skipped_with_a_warning(tmp_path, texts, tok, caplog):
    from memlens.integrations import MemlensCallback
    from memlens.integrations.trainer import sharding

    members, held_out = texts
    trainer = _trainer(tmp_path, "sharded", tok, members, held_out[:8], max_steps=3)
    assert sharding(trainer.args, trainer.model) is None
    trainer.args.fsdp = ["full_shard"]  # as an FSDP run sets it; the model itself stays whole on CPU here
    cb = MemlensCallback(members[:10], held_out[:10], attacks=["loss"])
    cb.attach(trainer)
    with caplog.at_level(logging.WARNING, logger="memlens"):
        cb.on_evaluate(trainer.args, trainer.state, trainer.control, model=trainer.model, processing_class=tok)
        cb.on_train_end(trainer.args, trainer.state, trainer.control, model=trainer.model, processing_class=tok)
    assert sum("audit the saved checkpoint instead" in r.message for r in caplog.records) == 1  # warned once
    assert cb.history == [] and not any("memlens/loss/auc" in h for h in trainer.state.log_history)


def test_bad_inputs():
    from memlens.data import DataError
    from memlens.integrations import MemlensCallback

    with pytest.raises(DataError):
        MemlensCallback(["a text"], [])


def test_auto_reference_is_the_adapter_disabled_model(tmp_path, texts, tok):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from memlens.data import DataError
    from memlens.integrations import MemlensCallback

    members, held_out = texts
    trainer = _trainer(tmp_path, "lora", tok, members, held_out[:8], max_steps=2)
    cb = MemlensCallback(members[:20], held_out[:20], reference="auto", attacks=["loss", "ref"], report=False, cache_dir=None,
                         on_evaluate=False)
    with pytest.raises(DataError, match="needs a peft model"):  # a plain model has no adapter to disable
        cb.attach(trainer).train()
    lora = get_peft_model(make_gpt2(len(tok), seed=0, init=0.02), LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
    cb2 = MemlensCallback(members[:20], held_out[:20], reference="auto", attacks=["loss", "ref"], report=False, cache_dir=None,
                          on_evaluate=False)
    cb2.on_train_begin(trainer.args, trainer.state, trainer.control, model=lora)
    lora.train()
    cb2._audit_and_log(trainer.args, trainer.state, lora, tok, final=True)
    assert lora.training  # the audit ran in eval mode and gave the training mode back
    assert [r["name"] for r in cb2.last_result.settings["references"]] == ["AdapterDisabled"]
    # with the adapter off the reference is the base: the 'ref' score (target - reference) is not all zero
    assert abs(cb2.last_result.scores["ref"]).max() > 1e-3
