import json
import os

import pytest
import torch

from memlens.testbed import TestbedConfig, build, read_jsonl, train_models
from memlens.testbed.check import greedy_extraction, load_model, memorization_report
from memlens.testbed.train import SPECIAL_TOKEN, collate, encode, train_tokenizer

os.environ["HF_HUB_OFFLINE"] = "1"  # also set by conftest; models load from local dirs only

# A testbed small enough to train in seconds: exercises every code path, memorizes nothing.
TINY = {
    "members_per_tier": 2,
    "n_background_docs": 24,
    "public_text_chars": 4000,
    "vocab_size": 400,
    "n_layer": 1,
    "d_model": 32,
    "n_head": 2,
    "d_ff": 64,
    "context": 256,
    "pretrain_epochs": 1,
    "finetune_epochs": 1,
    "n_reference_models": 2,
}


def test_tokenizer_prepends_bos_and_round_trips(tmp_path):
    texts = ["My SSN is 123-45-6789.", "Call Ann at (555) 010-2030, or e-mail ann@x.org."] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    assert tok.bos_token == tok.eos_token == tok.pad_token == SPECIAL_TOKEN
    enc = tok("My SSN is 123-45-6789.", return_offsets_mapping=True)
    assert enc["input_ids"][0] == tok.bos_token_id
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "My SSN is 123-45-6789."
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again("héllo ✓")["input_ids"] == tok("héllo ✓")["input_ids"]
    # encode() appends EOS and truncates to the context
    seqs = encode(tok, ["abc " * 200, "hi"], context=16)
    assert len(seqs[0]) == 16 and seqs[1][-1] == tok.eos_token_id and seqs[1][0] == tok.bos_token_id


def test_collate_masks_padding_but_keeps_eos_target():
    batch = collate([[0, 5, 6, 0], [0, 7, 0]], pad_id=0)
    assert batch["input_ids"].tolist() == [[0, 5, 6, 0], [0, 7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # the EOS (id 0, same as PAD) at the end of each document is a target; padding is not
    assert batch["labels"].tolist() == [[0, 5, 6, 0], [0, 7, 0, -100]]


def test_tiny_end_to_end_with_references(tmp_path):
    paths = build(tmp_path, quick=True, train=False, **TINY)
    train_models(paths, progress=False)  # config comes from the manifest
    for name in ("base", "target", "ref_pop0", "ref_pop1"):
        d = paths.models / name
        assert (d / "model.safetensors").is_file(), name
        assert (d / "tokenizer.json").is_file() and (d / "training.json").is_file()
    assert [p.name for p in paths.references] == ["ref_pop0", "ref_pop1"]
    summary = json.loads((paths.models / "training.json").read_text())
    assert summary["target"]["steps"] > 0 and summary["base"]["tokens"] > 0
    # a reference sees as many documents as the target: its population half, repeated like
    # the member tiers, plus the same filler
    n_target = len(read_jsonl(paths.finetune_corpus))
    assert abs(summary["ref_pop0"]["tokens"] / summary["target"]["tokens"] - 1) < 0.5
    assert n_target == 2 * (1 + 4 + 16) + paths.config().n_filler_docs

    # References: fine-tuned on different halves of the population, none of the members.
    refs = json.loads((paths.models / "references.json").read_text())
    pop = {r["id"] for r in read_jsonl(paths.population)}
    halves = [set(refs[n]["population_ids"]) for n in ("ref_pop0", "ref_pop1")]
    assert all(h <= pop and len(h) == len(pop) // 2 for h in halves)
    assert halves[0] != halves[1]

    # Every model loads from its own directory and scores text with the training format.
    model, tok = load_model(paths.target)
    ids = tok("hello", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    ex = greedy_extraction(model, tok, read_jsonl(paths.members)[:2])
    assert ex["n"] > 0 and 0.0 <= ex["rate"] <= 1.0


def test_training_is_deterministic(tmp_path):
    tiny = {**TINY, "n_reference_models": 0}
    a = build(tmp_path / "a", quick=True, progress=False, **tiny)
    b = build(tmp_path / "b", quick=True, progress=False, **tiny)
    for name in ("base", "target"):
        wa = (a.models / name / "model.safetensors").read_bytes()
        assert wa == (b.models / name / "model.safetensors").read_bytes(), name
    assert (a.tokenizer / "tokenizer.json").read_bytes() == (
        b.tokenizer / "tokenizer.json"
    ).read_bytes()


@pytest.mark.slow
def test_quick_testbed_memorizes(tmp_path):
    """The acceptance check of the quick testbed: a clear, repetition-ordered memorization
    signal, and 16x PII that greedy decoding reproduces while non-member PII is never produced."""
    paths = build(tmp_path, quick=True, progress=False)
    cfg = TestbedConfig.quick()
    assert paths.config() == cfg
    r = memorization_report(paths)
    base, target = r["nll"]["base"], r["nll"]["target"]
    drop = {g: base[g] - target[g] for g in target}

    # 16x is memorized: far below non-members under the target, and a much larger drop.
    assert target["member_16x"] < target["nonmember"] - 1.0
    assert drop["member_16x"] > drop["nonmember"] + 1.0
    # More repetitions, more memorization; 1x still above the non-members' drop.
    assert drop["member_16x"] > drop["member_4x"] > drop["member_1x"] > drop["nonmember"]
    # The base model never saw any audited profile: members and non-members look alike to it.
    assert abs(base["member_16x"] - base["nonmember"]) < 0.3
    # Fine-tuning did not wreck the model for the rest of the distribution.
    assert abs(drop["nonmember"]) < 0.5

    ex = r["extraction"]
    assert ex["target/member_16x"]["rate"] >= 0.4
    assert ex["base/member_16x"]["hits"] == 0
    assert ex["target/nonmember"]["rate"] <= 0.02


def test_split_references_cli_balanced_recorded_and_reused(tmp_path):
    from typer.testing import CliRunner

    from memlens.cli import app
    from memlens.splits import ReferenceSplits

    paths = build(tmp_path, quick=True, progress=False, **{**TINY, "n_reference_models": 0})
    run = CliRunner().invoke
    r = run(app, ["testbed", "references", "--testbed", str(tmp_path), "--k", "2"])
    assert r.exit_code == 0, r.output
    splits = json.loads((paths.models / "splits.json").read_text())
    pool = read_jsonl(paths.members) + read_jsonl(paths.nonmembers) + read_jsonl(paths.population)
    assert len(splits["pool"]) == len(pool) and splits["k"] == 2
    a, b = (set(splits["members"][n]) for n in ("split_ref0", "split_ref1"))
    assert not a & b and a | b == set(splits["pool"])  # K = 2: every text IN for exactly one
    # members keep their tier; the others got one of the members' tiers
    tiers = splits["tiers"]
    assert all(tiers[m["id"]] == m["tier"] for m in read_jsonl(paths.members))
    assert set(tiers.values()) <= set(paths.config().tiers)
    info = json.loads((paths.models / "split_ref0" / "training.json").read_text())
    n_filler = paths.config().n_filler_docs
    n_docs = sum(tiers[i] for i in splits["ids"]["split_ref0"]) + n_filler
    assert info["role"] == "split reference" and info["steps"] == -(-n_docs // paths.config().finetune_batch_size)
    # the audit reads the file with the model paths as written by the command
    s = ReferenceSplits.load(paths.models / "splits.json")
    m = s.membership([str(paths.models / "split_ref1"), str(paths.models / "split_ref0")], [pool[0]["text"]], None, "texts")
    assert m[:, 0].sum() == 1
    before = (paths.models / "split_ref0" / "model.safetensors").stat().st_mtime_ns
    assert run(app, ["testbed", "references", "--testbed", str(tmp_path), "--k", "2"]).exit_code == 0
    assert (paths.models / "split_ref0" / "model.safetensors").stat().st_mtime_ns == before  # reused, not retrained
    r = run(app, ["testbed", "references", "--testbed", str(tmp_path), "--k", "3"])
    assert r.exit_code != 0 and "even" in r.output


def test_split_plan_fixed_repeats_ignores_true_tiers(tmp_path):
    """--repeats N: every IN text N times (an auditor does not know the members' tiers); same splits as by tier."""
    from memlens.testbed.train import split_plan

    paths = build(tmp_path, quick=True, progress=False, train=False, **{**TINY, "n_reference_models": 0})
    by_tier, fixed = split_plan(paths, 2, 0), split_plan(paths, 2, 0, repeats=3)
    assert by_tier.meta["ids"] == fixed.meta["ids"]  # the same balanced halves
    assert fixed.meta["repeats"] == 3 and by_tier.meta["repeats"] == "true tier"
    assert set(fixed.meta["tiers"].values()) == {3}
    n_filler = sum(1 for r in read_jsonl(paths.finetune_corpus) if r.get("source") == "filler")
    for n in fixed.names:
        assert len(fixed.streams[n]) == 3 * len(fixed.meta["ids"][n]) + n_filler
        # each IN text appears exactly 3 times
        counts = {}
        for rec in fixed.streams[n]:
            counts[rec["id"]] = counts.get(rec["id"], 0) + 1
        assert all(counts[i] == 3 for i in fixed.meta["ids"][n])
    with pytest.raises(ValueError, match="at least 1"):
        split_plan(paths, 2, 0, repeats=0)
