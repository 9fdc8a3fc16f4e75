"""``memlens demo --family diffusion``: the PII testbed's corpora for diffusion LMs, training helpers,
a tiny end-to-end run (outputs exist, agree with each other, and a rerun reuses the models) and the CLI."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
from memlens.testbed.diffusion import (
    add_mask_token,
    build_diffusion_testbed,
    diffusion_loss,
    epoch_order,
    make_model,
    masked_logits,
    other_domain_documents,
    pii_corpora,
    train_masked_diffusion,
    train_tokenizer,
)

# A very small configuration: 3 members per tier, 12 non-members, a 1-layer 32-wide model.
TINY_TESTBED = dict(members_per_tier=3, n_nonmembers=12, n_population=3, n_background_docs=24, public_text_chars=3000)
TINY_MODEL = dict(vocab_size=400, hidden=32, layers=1, heads=2, intermediate=64, max_positions=256, batch_size=16,
                  pretrain_epochs=3.0, finetune_epochs=1.0)
TINY_MASKED = dict(steps=4)


@pytest.fixture(scope="module")
def tiny_testbed(tmp_path_factory):
    return build_testbed(tmp_path_factory.mktemp("pii"), TestbedConfig.quick(seed=3, **TINY_TESTBED))


@pytest.fixture(scope="module")
def tok(tiny_testbed):
    return add_mask_token(train_tokenizer(pii_corpora(tiny_testbed).tokenizer_texts, 400))


# --------------------------------------------------------------------------------------------
# Helpers of memlens.testbed.diffusion
# --------------------------------------------------------------------------------------------
def _batch(tok, texts):
    enc = [tok(t, truncation=True, max_length=64, return_special_tokens_mask=True) for t in texts]
    w = max(len(e["input_ids"]) for e in enc)
    ids = torch.full((len(enc), w), tok.pad_token_id)
    attn = torch.zeros((len(enc), w), dtype=torch.long)
    maskable = torch.zeros((len(enc), w), dtype=torch.bool)
    for r, e in enumerate(enc):
        n = len(e["input_ids"])
        ids[r, :n] = torch.tensor(e["input_ids"])
        attn[r, :n] = 1
        maskable[r, :n] = torch.tensor([not s for s in e["special_tokens_mask"]])
    return ids, attn, maskable


class _NoHead(torch.nn.Module):
    """A masked LM without BertForMaskedLM's bert/cls attributes (the generic path of masked_logits)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_masked_logits_equal_full_forward_at_masked_positions(tok):
    model = make_model(tok, hidden=32, layers=2, heads=2, intermediate=64, seed=1).eval()
    ids, attn, maskable = _batch(tok, ["Alice Smith lives at 12 Oak Road.", "Call 555-0134 today, Bob!"])
    masked = maskable & (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.4)
    masked[0, 1] = masked[1, 2] = True
    inputs = ids.masked_fill(masked, tok.mask_token_id)
    with torch.no_grad():
        full = model(input_ids=inputs, attention_mask=attn).logits[masked]
        fast = masked_logits(model, inputs, attn, masked)
        generic = masked_logits(_NoHead(model), inputs, attn, masked)
    assert fast.shape == (int(masked.sum()), len(tok))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(generic, full)


def test_diffusion_loss_by_hand(tok):
    """The plain and LLaDA-weighted losses against a hand computation with the same random draws."""
    model = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, seed=2).eval()
    ids, attn, maskable = _batch(tok, ["Order 42 shipped to Paris.", "Jane Doe, born 1970, nurse at Acme."])
    with torch.no_grad():
        plain = diffusion_loss(model, ids, attn, maskable, tok.mask_token_id, torch.Generator().manual_seed(5),
                               weighting="plain", min_ratio=0.3)
        llada = diffusion_loss(model, ids, attn, maskable, tok.mask_token_id, torch.Generator().manual_seed(5),
                               weighting="llada", min_ratio=0.3)
        g = torch.Generator().manual_seed(5)
        ratio = 0.3 + 0.7 * torch.rand(2, 1, generator=g)
        masked = (torch.rand(ids.shape, generator=g) < ratio) & maskable
        assert masked.any(dim=1).all()  # (the seed masks something in both rows: no forced position)
        logp = torch.log_softmax(model(input_ids=ids.masked_fill(masked, tok.mask_token_id), attention_mask=attn).logits, -1)
        nll = -logp.gather(-1, ids[..., None])[..., 0]
        want_plain = nll[masked].mean()
        want_llada = torch.stack([nll[r][masked[r]].sum() / ratio[r, 0] / maskable[r].sum() for r in range(2)]).mean()
    torch.testing.assert_close(plain, want_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(llada, want_llada, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        diffusion_loss(model, ids, attn, maskable, tok.mask_token_id, torch.Generator(), weighting="other")


def test_diffusion_loss_masks_at_least_one_token_per_sequence(tok):
    model = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64).eval()
    ids, attn, maskable = _batch(tok, ["a b c", "Some longer text with several words in it."])
    with torch.no_grad():  # a ratio of ~1e-9 masks nothing by chance: one position is forced per row
        loss = diffusion_loss(model, ids, attn, maskable, tok.mask_token_id, torch.Generator().manual_seed(0),
                              weighting="plain", min_ratio=1e-9)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("bucket", [0, 3])
def test_epoch_order_is_a_permutation(bucket):
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(103)]
    order = epoch_order(lengths, 8, random.Random(1), bucket)
    assert sorted(order) == list(range(103))
    assert order == epoch_order(lengths, 8, random.Random(1), bucket)  # seeded
    if bucket:
        # batches inside a chunk are length-sorted: much less padding than a plain shuffle
        def padding(o):
            return sum(max(lengths[i] for i in o[b:b + 8]) * len(o[b:b + 8]) - sum(lengths[i] for i in o[b:b + 8])
                       for b in range(0, len(o), 8))
        assert padding(order) < 0.6 * padding(epoch_order(lengths, 8, random.Random(1), 0))


def test_bucketed_training_is_seeded_and_learns(tok, tiny_testbed):
    texts = pii_corpora(tiny_testbed).pretrain["no-shift"][:48]
    runs = []
    for _ in range(2):
        m = make_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_positions=256, seed=0)
        runs.append(train_masked_diffusion(m, texts, tok, epochs=4, lr=3e-3, batch_size=8, bucket=2, seed=1))
    assert runs[0].losses == runs[1].losses and runs[0].steps == -(-len(texts) * 4 // 8)
    assert np.mean(runs[0].losses[-6:]) < np.mean(runs[0].losses[:6])


def test_other_domain_documents():
    docs = other_domain_documents(7, seed=1, per_doc=2)
    assert len(docs) == 7 and all(d.count("\n") >= 1 for d in docs)
    assert docs == other_domain_documents(7, seed=1, per_doc=2)
    assert docs != other_domain_documents(7, seed=2, per_doc=2)


def test_pii_corpora(tiny_testbed):
    c = pii_corpora(tiny_testbed, seed=3)
    mem, non = read_jsonl(tiny_testbed.members), read_jsonl(tiny_testbed.nonmembers)
    stream, pre = read_jsonl(tiny_testbed.finetune_corpus), read_jsonl(tiny_testbed.pretrain_corpus)
    assert c.members == [r["text"] for r in mem] and c.nonmembers == [r["text"] for r in non]
    assert c.member_tiers == [r["tier"] for r in mem] and sorted(set(c.member_tiers)) == [1, 4, 16]
    # the fine-tuning stream: every member by its tier, plus the filler
    n_filler = sum(r["source"] == "filler" for r in stream)
    assert n_filler > 0 and len(c.finetune) == sum(c.member_tiers) + n_filler
    for text, k in zip(c.members, c.member_tiers):
        assert c.finetune.count(text) == k
    only = pii_corpora(tiny_testbed, filler=False, seed=3)
    assert len(only.finetune) == sum(c.member_tiers) and only.counts["finetune_filler"] == 0
    # no-shift: the testbed's pretraining corpus; shift: its prose, background documents replaced by other genres
    assert c.pretrain["no-shift"] == [r["text"] for r in pre]
    public = {r["text"] for r in pre if r["source"] == "public"}
    background = {r["text"] for r in pre if r["source"] != "public"}
    shift = set(c.pretrain["shift"])
    assert len(c.pretrain["shift"]) == len(pre) and public <= shift and not (background & shift)
    assert c.counts["pretrain_other_domain"] == len(background)
    # the tokenizer never sees an audited or filler document
    audited = set(c.members) | set(c.nonmembers) | {r["text"] for r in stream}
    assert not (audited & set(c.tokenizer_texts))


def test_pii_corpora_rejects_a_stream_that_breaks_the_tiers(tiny_testbed, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(tiny_testbed.root, root)
    from memlens.testbed import TestbedPaths

    paths = TestbedPaths(root)
    stream = read_jsonl(paths.finetune_corpus)
    drop = next(i for i, r in enumerate(stream) if r["source"] == "member")
    paths.finetune_corpus.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(stream) if i != drop))
    with pytest.raises(ValueError, match="tiers"):
        pii_corpora(paths)


def test_build_diffusion_testbed_with_given_stream_and_tiers(tok):
    from memlens.testbed.diffusion import DiffusionConfig

    cfg = DiffusionConfig(hidden=16, layers=1, heads=2, intermediate=32, batch_size=4, pretrain_epochs=1, finetune_epochs=1)
    members, nonmembers = ["m one text", "m two text"], ["n one", "n two"]
    with pytest.raises(ValueError, match="2 members"):
        build_diffusion_testbed("no-shift", cfg, tokenizer=tok, pretrain_texts=["p"] * 4, members=members,
                                nonmembers=nonmembers, member_tiers=[1])
    tb = build_diffusion_testbed("shift", cfg, tokenizer=tok, pretrain_texts=["p a", "p b"] * 4, members=members,
                                 nonmembers=nonmembers, member_tiers=[1, 3], finetune_texts=["m one text"] + ["m two text"] * 3)
    assert tb.member_tiers == [1, 3] and tb.logs["finetune"].steps == 1  # 4 texts, batch 4, 1 epoch
    assert list(tb.labels) == [1, 1, 0, 0]


# --------------------------------------------------------------------------------------------
# The demo end to end, and the CLI
# --------------------------------------------------------------------------------------------
def _check_outputs(out, summary, conditions):
    from memlens.attacks import attacks_of_kind

    ATTACKS = attacks_of_kind("masked")

    assert json.loads((out / "summary.json").read_text())["conditions_run"] == list(conditions)
    mem = read_jsonl(out / "testbed" / "members.jsonl")
    non = read_jsonl(out / "testbed" / "nonmembers.jsonl")
    by_tier = {f"{k}x": sum(r["tier"] == k for r in mem) for k in (1, 4, 16)}
    assert summary["testbed"]["members_by_tier"] == by_tier
    for cond in conditions:
        cs = summary["conditions"][cond]
        for role in ("base", "target"):
            assert (out / cond / "models" / role / "model.safetensors").is_file()
        scores = pd.read_csv(out / cond / "scores.csv")
        assert len(scores) == len(mem) + len(non) and set(ATTACKS) <= set(scores.columns)
        assert scores[list(ATTACKS)].notna().all().all()
        assert scores["sama"].between(0, 1).all()
        res = json.loads((out / cond / "results.json").read_text())
        assert set(ATTACKS) <= set(res["metrics"]) and set(cs["metrics"]) == set(res["metrics"])
        for a in ATTACKS:
            assert cs["metrics"][a]["auc"] == pytest.approx(res["metrics"][a]["auc"])
            assert cs["metrics"][a]["n_members"] == len(mem) and cs["metrics"][a]["n_nonmembers"] == len(non)
        assert list(cs["per_tier"]) == ["1x", "4x", "16x"]
        for tier, rows in cs["per_tier"].items():
            assert {a: r["n_members"] for a, r in rows.items()} == {a: by_tier[tier] for a in rows}
        # winners are the attacks with the highest value
        for where, w in cs["winners"].items():
            rows = cs["metrics"] if where == "overall" else cs["per_tier"][where]
            assert w["auc"] and all(rows[a]["auc"] == max(r["auc"] for r in rows.values()) for a in w["auc"])
        # the pretrained base got better at its corpus, and the target at the fine-tuning stream
        assert cs["train"]["pretrain"]["loss_last"] < cs["train"]["pretrain"]["loss_first"]
        assert cs["train"]["finetune"]["steps"] >= 1


@pytest.mark.slow
def test_tiny_diffusion_demo_end_to_end_and_resume(tmp_path):
    from memlens.lab.demo_diffusion import format_summary, run_diffusion_demo

    out = tmp_path / "dd"
    kw = dict(quick=True, condition="both", seed=3, progress=False, n_bootstrap=20, testbed_overrides=TINY_TESTBED,
              model_overrides=TINY_MODEL, masked=TINY_MASKED)
    run = run_diffusion_demo(out, **kw)
    s = run["summary"]
    _check_outputs(out, s, ("no-shift", "shift"))
    assert not any(c["train"]["reused"] for c in s["conditions"].values())
    # the two conditions share the data and tokenizer, but their bases saw different corpora
    assert s["conditions"]["no-shift"]["train"]["fingerprint"] != s["conditions"]["shift"]["train"]["fingerprint"]
    tok_meta = json.loads((out / "tokenizer" / "memlens_tokenizer.json").read_text())
    assert tok_meta["vocab_size"] == TINY_MODEL["vocab_size"]
    text = format_summary(s)
    assert "== no-shift" in text and "== shift" in text and "best AUC" in text

    # a rerun reuses the trained models (and the cached masked pass): same numbers
    again = run_diffusion_demo(out, **kw)["summary"]
    assert all(c["train"]["reused"] for c in again["conditions"].values())
    for cond in ("no-shift", "shift"):
        for a, m in s["conditions"][cond]["metrics"].items():
            assert again["conditions"][cond]["metrics"][a]["auc"] == m["auc"]
    # the ablation benchmark recomputes the attacks from the cached masked pass: the same numbers
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "diffusion_sama_ablation.py"
    spec = importlib.util.spec_from_file_location("diffusion_sama_ablation", path)
    abl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(abl)
    r = abl.analyse(out, "no-shift")
    for name, attack in (("sama (paper: m=10, 1/t weights)", "sama"), ("dlm_ref", "dlm_ref"), ("dlm_loss", "dlm_loss")):
        assert r["attacks"][name]["auc"] == pytest.approx(s["conditions"]["no-shift"]["metrics"][attack]["auc"])
    assert 0 <= r["diagnostics"]["nonmembers"]["share_positive"] <= 1
    # other model settings: retrained, not reused
    other = run_diffusion_demo(out, **{**kw, "condition": "shift", "model_overrides": {**TINY_MODEL, "hidden": 16}})
    assert not other["summary"]["conditions"]["shift"]["train"]["reused"]


@pytest.mark.slow
def test_cli_demo_family_diffusion(tmp_path, monkeypatch):
    import memlens.lab.demo_diffusion as dd
    from memlens.cli import app

    monkeypatch.setitem(dd.TESTBED_PRESETS, "quick", TINY_TESTBED)
    monkeypatch.setitem(dd.MODEL_PRESETS, "quick", TINY_MODEL)
    monkeypatch.setitem(dd.BOOTSTRAP, "quick", (20, 20))
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["demo", "--family", "diffusion", "--quick", "--condition", "shift", "--seed", "1",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "shift: AUC (TPR@1%FPR)" in r.output and "no-shift" not in r.output
    for a in ("sama", "dlm_loss", "dlm_ref"):
        assert a in r.output
    assert "shift: best AUC: overall" in r.output and "shift: best TPR@1%FPR: n/a" in r.output  # 12 non-members
    s = json.loads((out / "summary.json").read_text())
    assert s["conditions_run"] == ["shift"] and s["seed"] == 1 and s["quick"] is True
    _check_outputs(out, s, ("shift",))
    r2 = CliRunner().invoke(app, ["demo", "--family", "diffusion", "--quick", "--condition", "shift", "--seed", "1",
                                  "--out", str(out)])
    assert r2.exit_code == 0 and "models reused" in r2.output


@pytest.mark.parametrize("args, msg", [
    (["--family", "hybrid"], "--family must be one of"),
    (["--family", "diffusion", "--condition", "sideways"], "--condition must be one of"),
    (["--family", "diffusion", "--model-size", "tiny"], "--model-size"),
    (["--condition", "shift"], "goes with --family diffusion"),
    # --retrain is an option of the causal demo too now (it reuses trained models by default)
    (["--base", "smollm2", "--retrain"], "--retrain goes with the tiny from-scratch models"),
])
def test_cli_demo_family_bad_input(tmp_path, args, msg):
    from memlens.cli import app

    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2
    assert msg in " ".join(r.output.split())
    assert not (tmp_path / "x").exists()


def test_shared_tokenizer_is_reused_when_trained_on_the_same_texts(tiny_testbed, tmp_path, monkeypatch):
    import memlens.testbed.diffusion as diffusion
    from memlens.lab.demo_diffusion import _ensure_tokenizer

    texts = pii_corpora(tiny_testbed).tokenizer_texts
    first = _ensure_tokenizer(tmp_path / "tok", texts, 300)

    def no_training(*a, **k):
        raise AssertionError("the saved tokenizer should have been reused")

    monkeypatch.setattr(diffusion, "train_tokenizer", no_training)
    again = _ensure_tokenizer(tmp_path / "tok", texts, 300)
    assert again.get_vocab() == first.get_vocab() and again.mask_token_id == first.mask_token_id
    with pytest.raises(AssertionError, match="reused"):  # other texts or another size: trained anew
        _ensure_tokenizer(tmp_path / "tok", texts[:-1], 300)


def test_synthetic_corpora_do_not_depend_on_the_date(monkeypatch):
    """Faker draws dates up to "now" unless told otherwise; the corpora draw them up to a fixed date."""
    import datetime as dt

    import faker.providers.date_time as fdt

    from memlens.testbed.diffusion import synthetic_bios

    before = (synthetic_bios(20, seed=4), other_domain_documents(20, seed=4))

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2031, 3, 3, 12, 0, tzinfo=tz)

    monkeypatch.setattr(fdt, "datetime", Later)
    assert (synthetic_bios(20, seed=4), other_domain_documents(20, seed=4)) == before
