"""Issue 12, item 11: parameters for an attack that is unknown or not run, no attacks at all, and one
text given as member and non-member: one-line errors before any model runs; a repeated text: a note."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memlens.audit import audit
from memlens.cli import app
from memlens.errors import AttackError, DataError

runner = CliRunner()
MEM = ["Amber stone by the river, code 101.", "Copper harbor lantern and the willow."]
NON = ["Velvet walnut by the meadow.", "Falcon ember over the tundra, code 202."]


def _audit(gpt2, tmp_path, **kw):
    kw = {"members": MEM, "nonmembers": NON, "attacks": "loss", "device": "cpu", "progress": False,
          "cache_dir": tmp_path / "cache", "n_bootstrap": 0, **kw}
    return audit(str(gpt2.path), **kw)


def test_param_for_an_unknown_attack(gpt2, tmp_path):
    with pytest.raises(AttackError, match="unknown attack 'minkk'; known attacks"):
        _audit(gpt2, tmp_path, attack_params={"minkk": {"k": "0.1"}})


def test_param_for_an_attack_not_being_run(gpt2, tmp_path):
    with pytest.raises(DataError, match=r"parameters given for attack 'mink', which is not being run \(attacks: loss\)"):
        _audit(gpt2, tmp_path, attack_params={"mink": {"k": "0.1"}})
    assert not (tmp_path / "cache").exists()  # refused before the pass


def test_no_attacks_selected(gpt2, tmp_path):
    with pytest.raises(DataError, match="no attacks selected"):
        _audit(gpt2, tmp_path, attacks="")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": int(i < 2)}) + "\n" for i, t in enumerate(MEM + NON)))
    r = runner.invoke(app, ["audit", "--target", str(gpt2.path), "--data", str(data), "--attacks", "",
                            "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--device", "cpu"])
    assert r.exit_code == 2 and "no attacks selected" in r.output and not (tmp_path / "o" / "results.json").exists()


def test_one_text_as_member_and_non_member(gpt2, tmp_path):
    with pytest.raises(DataError, match=r"texts 'members-1' \(label 1\) and 'nonmembers-0' \(label 0\) are the same text"):
        _audit(gpt2, tmp_path, nonmembers=[MEM[1], *NON])


def test_a_repeated_text_with_one_label_is_a_note(gpt2, tmp_path):
    (tmp_path / "m.txt").write_text("\n".join(MEM + [MEM[0]]) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(NON) + "\n")
    r = runner.invoke(app, ["audit", "--target", str(gpt2.path), "--members", str(tmp_path / "m.txt"), "--nonmembers",
                            str(tmp_path / "n.txt"), "--attacks", "loss", "--out", str(tmp_path / "o"), "--bootstrap", "0",
                            "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--no-report"])
    assert r.exit_code == 0, r.output
    note = json.loads((tmp_path / "o" / "results.json").read_text())["notes"]
    assert any("1 texts repeat an earlier text with the same label" in n for n in note)
    assert "repeat an earlier text" in r.output
