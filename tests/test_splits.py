"""Reference splits files: matching references, membership matrices, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from memlens.cache import text_hash
from memlens.cli import app
from memlens.splits import ReferenceSplits, SplitsError, out_groups, write_splits

TEXTS = ["alpha text", "beta text", "gamma text"]


def _file(tmp_path, pool=True):
    (tmp_path / "models").mkdir(exist_ok=True)
    members = {"ref_a": [text_hash(TEXTS[0])], "ref_b": [text_hash(TEXTS[1]), text_hash(TEXTS[2])]}
    return write_splits(tmp_path / "models" / "splits.json", ["ref_a", "ref_b"], members, [text_hash(t) for t in TEXTS] if pool else [],
                        seed=3)


def test_membership_in_the_order_of_the_references(tmp_path):
    s = ReferenceSplits.load(_file(tmp_path))
    # given as paths (resolved against the file's folder), as names, in either order
    m = s.membership([str(tmp_path / "models" / "ref_b"), "ref_a"], TEXTS, None, "texts")
    np.testing.assert_array_equal(m, [[False, True, True], [True, False, False]])
    assert len(s.sha256) == 64 and s.describe()["references"] == ["ref_a", "ref_b"]


def test_id_keys():
    s = ReferenceSplits.from_dict({"key": "id", "members": {"r0": ["x1"], "r1": ["x2"]}})
    np.testing.assert_array_equal(s.membership(["r0", "r1"], ["a", "b"], ["x1", "x2"], "texts"), [[True, False], [False, True]])
    with pytest.raises(SplitsError, match="no ids"):
        s.membership(["r0"], ["a"], None, "texts")


def test_errors(tmp_path):
    s = ReferenceSplits.load(_file(tmp_path))
    with pytest.raises(SplitsError, match="'ref_c' is not in the splits file"):
        s.membership(["ref_a", "ref_c"], TEXTS, None, "texts")
    with pytest.raises(SplitsError, match="1 of the 2 texts are not in the splits file's pool"):
        s.membership(["ref_a"], [TEXTS[0], "never seen"], None, "texts")
    with pytest.raises(SplitsError, match="same splits entry"):
        s.membership(["ref_a", "ref_a"], TEXTS, None, "texts")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": {"r": "notalist"}}))
    with pytest.raises(SplitsError, match="must be a list"):
        ReferenceSplits.load(bad)
    bad.write_text("{")
    with pytest.raises(SplitsError, match="not JSON"):
        ReferenceSplits.load(bad)
    with pytest.raises(SplitsError, match="key must be"):
        ReferenceSplits.from_dict({"key": "md5", "members": {}})


def test_out_groups():
    m = np.array([[True, False, True], [False, False, True]])
    assert out_groups(m) == {(1,): [0], (0, 1): [1, 2]}  # text 2 has no OUT reference: all of them


def test_cli_unknown_reference_is_one_line(tmp_path, gpt2, gpt2_ref):
    splits = _file(tmp_path)
    for name, rows in (("m.jsonl", TEXTS[:2]), ("n.jsonl", TEXTS[2:])):
        (tmp_path / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    r = CliRunner().invoke(app, ["audit", "-t", str(gpt2.path), "-r", str(gpt2_ref.path), "--reference-splits", str(splits),
                                 "--members", str(tmp_path / "m.jsonl"), "--nonmembers", str(tmp_path / "n.jsonl"), "--no-cache",
                                 "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "is not in the splits file" in r.output and "Traceback" not in r.output


def test_cli_audit_with_splits_records_hash_and_modes(tmp_path, gpt2, gpt2_ref, gpt2_ref2):
    texts = ["river stone lamp orchard, code 1234.", "violet copper harbor meadow, code 5678.", "lantern thistle quarry, code 4321.",
             "falcon ember willow marble, code 8765."]
    pop = ["cedar pebble saffron juniper, code 1111.", "tundra canyon velvet walnut, code 2222."]
    members = {gpt2_ref.path.name: [text_hash(t) for t in texts[::2] + pop[:1]],
               gpt2_ref2.path.name: [text_hash(t) for t in texts[1::2] + pop[1:]]}
    splits = write_splits(tmp_path / "splits.json", list(members), members, [text_hash(t) for t in texts + pop])
    for name, rows in (("m.jsonl", texts[:2]), ("n.jsonl", texts[2:]), ("p.jsonl", pop)):
        (tmp_path / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["audit", "-t", str(gpt2.path), "-r", str(gpt2_ref.path), "-r", str(gpt2_ref2.path),
                                 "--reference-splits", str(splits), "--members", str(tmp_path / "m.jsonl"),
                                 "--nonmembers", str(tmp_path / "n.jsonl"), "--population", str(tmp_path / "p.jsonl"),
                                 "-a", "rmia,informia,informia_token,ref", "-p", "informia.mode=offline", "--no-cache", "--no-report",
                                 "--bootstrap", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["reference_splits"]["sha256"] == ReferenceSplits.load(splits).sha256
    assert res["settings"]["attack_modes"]["rmia"] == "online"
    assert res["settings"]["attack_modes"]["informia"] == "offline, a=1"
