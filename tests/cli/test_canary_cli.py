"""`memlens canary make|insert|exposure` through typer (the sub-app as the main CLI mounts it)."""
from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from memlens.cli.canary import canary_app

runner = CliRunner()
app = typer.Typer()
app.add_typer(canary_app, name="canary")


def test_make_insert_exposure(tmp_path, llama):
    man = tmp_path / "canaries.json"
    r = runner.invoke(app, ["canary", "make", "{=Aa} code {dd}", "--repetitions", "1,3", "--held-out", "1", "--out", str(man)])
    assert r.exit_code == 0, r.output
    assert "2 canaries to insert (4 copies), 1 held out" in r.output
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(10)))
    r = runner.invoke(app, ["canary", "insert", "-m", str(man), "--train", str(train), "--out", str(tmp_path / "mixed.jsonl")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "mixed.jsonl").read_text().splitlines()) == 14
    assert json.loads(man.read_text())["insertions"]["n_records"] == 14
    r = runner.invoke(app, ["canary", "exposure", "-t", str(llama.path), "-m", str(man), "-o", str(tmp_path / "e.json"),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "held out" in r.output and "|R| = 100; exact" in r.output
    assert set(json.loads((tmp_path / "e.json").read_text())["by_repetition"]) == {"0", "1", "3"}


def test_bad_input_is_one_line_exit_2(tmp_path):
    r = runner.invoke(app, ["canary", "make", "no slot here", "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and "no secret slot" in r.output and len(r.output.strip().splitlines()) == 1
    runner.invoke(app, ["canary", "make", "pin {ddd}", "--out", str(tmp_path / "c.json")])
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    r = runner.invoke(app, ["canary", "insert", "-m", str(tmp_path / "c.json"), "--train", str(tmp_path / "t.txt"),
                            "--out", str(tmp_path / "o.txt")])
    assert r.exit_code == 2 and "do not fit" in r.output
