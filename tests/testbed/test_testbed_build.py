import json
from collections import Counter

import pytest

from memlens.testbed import TestbedConfig, TestbedPaths, build_testbed, read_jsonl
from memlens.testbed.build import FINETUNE, MEMBERS, NONMEMBERS, POPULATION, PRETRAIN, PROFILES
from memlens.testbed.profiles import UNIQUE_PII_TYPES

FILES = (MEMBERS, NONMEMBERS, POPULATION, FINETUNE, PRETRAIN, PROFILES, "manifest.json")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = TestbedConfig.quick(seed=11)
    return build_testbed(tmp_path_factory.mktemp("quick"), cfg), cfg


def test_files_and_manifest(quick):
    paths, cfg = quick
    for name in FILES:
        assert (paths.root / name).is_file(), name
    m = json.loads(paths.manifest.read_text())
    assert m["seed"] == 11
    assert m["counts"]["members"] == 48 == len(read_jsonl(paths.members))
    assert m["counts"]["members_by_tier"] == {"1": 16, "4": 16, "16": 16}
    assert m["counts"]["nonmembers"] == 48 == len(read_jsonl(paths.nonmembers))
    assert m["counts"]["population"] == 48 == len(read_jsonl(paths.population))
    assert m["counts"]["exposures_by_tier"] == {str(t): t * cfg.finetune_epochs for t in cfg.tiers}
    assert TestbedPaths(paths.root).config() == cfg


def test_record_schema_and_labels(quick):
    paths, cfg = quick
    keys = {"id", "text", "label", "tier", "kind", "profile_id", "pii"}
    for name, label in ((MEMBERS, 1), (NONMEMBERS, 0), (POPULATION, None)):
        for r in read_jsonl(paths.root / name):
            assert keys <= set(r)
            assert r["label"] == label
            assert (r["tier"] in cfg.tiers) if label == 1 else r["tier"] is None
            assert r["kind"] in cfg.kinds


def test_spans_exact_in_every_file(quick):
    paths, _ = quick
    for name in (MEMBERS, NONMEMBERS, POPULATION, FINETUNE, PRETRAIN):
        for r in read_jsonl(paths.root / name):
            for s in r["pii"]:
                assert r["text"][s["start"] : s["end"]] == s["value"]


def test_splits_are_disjoint(quick):
    paths, _ = quick
    groups = {
        "members": read_jsonl(paths.members),
        "nonmembers": read_jsonl(paths.nonmembers),
        "population": read_jsonl(paths.population),
        "filler": [r for r in read_jsonl(paths.finetune_corpus) if r["source"] == "filler"],
        "background": [r for r in read_jsonl(paths.pretrain_corpus) if r["source"] == "background"],
    }
    ids, pids = Counter(), Counter()
    for recs in groups.values():
        ids.update({r["id"] for r in recs})
        pids.update({r["profile_id"] for r in recs})
    assert max(ids.values()) == 1 and max(pids.values()) == 1
    # one document per audited profile
    for g in ("members", "nonmembers", "population"):
        assert len({r["profile_id"] for r in groups[g]}) == len(groups[g])
    # profiles.jsonl records each profile's split, and the documents agree with it
    split_of = {r["profile_id"]: r["split"] for r in read_jsonl(paths.profiles)}
    names = {"members": "member", "nonmembers": "nonmember", "population": "population",
             "filler": "filler", "background": "background"}  # fmt: skip
    for g, recs in groups.items():
        assert all(split_of[r["profile_id"]] == names[g] for r in recs), g
    assert len(split_of) == sum(len(v) for v in groups.values())


def test_nonmember_pii_never_in_training_data(quick):
    paths, _ = quick
    training = "\n".join(
        r["text"] for name in (FINETUNE, PRETRAIN) for r in read_jsonl(paths.root / name)
    )
    for name in (NONMEMBERS, POPULATION):
        for r in read_jsonl(paths.root / name):
            for s in r["pii"]:
                if s["type"] in UNIQUE_PII_TYPES:
                    assert s["value"] not in training, (name, s)
    # ...while members' PII is, of course, in the fine-tuning stream
    member_values = [s["value"] for r in read_jsonl(paths.members) for s in r["pii"]]
    assert all(v in training for v in member_values)


def test_tier_counts_in_finetune_corpus(quick):
    paths, cfg = quick
    members = {r["id"]: r for r in read_jsonl(paths.members)}
    stream = read_jsonl(paths.finetune_corpus)
    counts = Counter(r["id"] for r in stream if r["source"] == "member")
    assert set(counts) == set(members)
    for mid, n in counts.items():
        assert n == members[mid]["tier"]
    assert Counter(members[m]["tier"] for m in members) == {t: 16 for t in cfg.tiers}
    # repeats carry the member's text and label unchanged
    for r in stream:
        if r["source"] == "member":
            assert r["text"] == members[r["id"]]["text"] and r["label"] == 1
            assert 0 <= r["repeat"] < r["tier"]
    fill = [r for r in stream if r["source"] == "filler"]
    assert len(fill) == cfg.n_filler_docs == len({r["id"] for r in fill})
    assert all(r["label"] is None for r in fill)
    # shuffled: the 16x copies are spread over the stream, not adjacent
    some_16x = next(m for m in members if members[m]["tier"] == 16)
    pos = [i for i, r in enumerate(stream) if r["id"] == some_16x]
    assert len(pos) == 16 and pos[-1] - pos[0] > len(stream) // 2


def test_kinds_balanced_within_tiers(quick):
    paths, cfg = quick
    members = read_jsonl(paths.members)
    for tier in cfg.tiers:
        counts = Counter(r["kind"] for r in members if r["tier"] == tier)
        assert set(counts) == set(cfg.kinds)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_pretrain_corpus_has_public_prose_and_background(quick):
    paths, _ = quick
    recs = read_jsonl(paths.pretrain_corpus)
    sources = Counter(r["source"] for r in recs)
    assert sources["background"] == 600 and sources["public"] > 50
    assert all(not r["pii"] for r in recs if r["source"] == "public")


def test_same_seed_identical_files_other_seed_different(tmp_path):
    cfg = TestbedConfig.quick(seed=5, members_per_tier=4, n_background_docs=30)
    a = build_testbed(tmp_path / "a", cfg)
    b = build_testbed(tmp_path / "b", cfg)
    for name in FILES:
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    c = build_testbed(
        tmp_path / "c", TestbedConfig.quick(seed=6, members_per_tier=4, n_background_docs=30)
    )
    assert (a.root / MEMBERS).read_bytes() != (c.root / MEMBERS).read_bytes()


def test_config_validation():
    with pytest.raises(ValueError):
        TestbedConfig(tiers=(0, 2))
    with pytest.raises(ValueError):
        TestbedConfig(kinds=("wiki_bio", "sonnet"))
    cfg = TestbedConfig(tiers=[1, 2], n_nonmembers=10)
    assert cfg.tiers == (1, 2) and cfg.nonmember_count == 10 and cfg.population_count == 2 * 48
