"""Issue 17, item 2: ``memlens attack`` never destroys an audit's outputs (its own default directory,
and a directory holding another run is refused without --force); ``--dtype`` reaches the cache key."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memlens.cli import app

runner = CliRunner()
MEM = ["Amber stone by the river, code 101.", "Copper harbor lantern and the willow.", "Marble cedar quarry, code 303."]
NON = ["Velvet walnut by the meadow.", "Falcon ember over the tundra, code 202.", "Hazel cobalt canyon at the orchard."]


@pytest.fixture
def workdir(gpt2, tmp_path, monkeypatch):
    (tmp_path / "m.txt").write_text("\n".join(MEM) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(NON) + "\n")
    monkeypatch.chdir(tmp_path)  # the commands' default --out is out/ in the working directory
    base = ["--target", str(gpt2.path), "--members", "m.txt", "--nonmembers", "n.txt", "--cache-dir", "cache", "--bootstrap", "0"]
    r = runner.invoke(app, ["audit", *base, "--device", "cpu", "--attacks", "loss,zlib,mink"])
    assert r.exit_code == 0, r.output
    return tmp_path, base


def _snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_attack_after_audit_with_defaults_leaves_the_audit_intact(workdir):
    root, base = workdir
    before = _snapshot(root / "out")
    r = runner.invoke(app, ["attack", *base, "--attacks", "mink", "-p", "mink.k=0.5"])
    assert r.exit_code == 0, r.output
    assert _snapshot(root / "out") == before
    res = json.loads((root / "out" / "attack-mink" / "results.json").read_text())
    assert res["settings"]["attacks"] == ["mink"] and res["settings"]["attack_params"]["mink"]["k"] == 0.5
    r = runner.invoke(app, ["attack", *base, "--attacks", "mink"])  # the same attacks again: a rerun, allowed
    assert r.exit_code == 0, r.output


def test_attack_into_the_audits_directory_needs_force(workdir):
    root, base = workdir
    before = _snapshot(root / "out")
    r = runner.invoke(app, ["attack", *base, "--attacks", "mink", "--out", "out"])
    assert r.exit_code == 2 and "holds the outputs of memlens audit with --attacks loss,zlib,mink" in r.output
    assert _snapshot(root / "out") == before
    r = runner.invoke(app, ["attack", *base, "--attacks", "mink", "--out", "out", "--force"])
    assert r.exit_code == 0, r.output
    assert list(json.loads((root / "out" / "results.json").read_text())["metrics"]) == ["mink"]


def test_attack_dtype_is_passed_through_and_named_on_a_miss(workdir):
    root, base = workdir
    r = runner.invoke(app, ["attack", *base, "--attacks", "loss", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["attack", *base, "--attacks", "loss", "--dtype", "bfloat16"])  # the audit ran in float32
    assert r.exit_code == 2 and "(dtype bfloat16)" in r.output and "pass --dtype bfloat16" in r.output
