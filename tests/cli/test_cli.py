"""End-to-end CLI tests on tiny models saved with save_pretrained; bad inputs get one-line errors."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memlens.cli import app
from tests.tiny_lm import save_base_and_target, word_salads

os.environ["HF_HUB_OFFLINE"] = "1"
runner = CliRunner()

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = random.Random(0)
    members, nonmembers, population, pretrain = (word_salads(rng, 24), word_salads(rng, 24), word_salads(rng, 16),
                                                 word_salads(rng, 64))
    return save_base_and_target(tmp_path_factory.mktemp("cli"), members=members, nonmembers=nonmembers, pretrain=pretrain,
                                population=population, finetune_steps=60, finetune_lr=3e-3)


def _audit_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["audit", "--target", str(root / "target"), "--reference", str(root / "base"),
            "--members", str(root / "members.jsonl"), "--nonmembers", str(root / "nonmembers.jsonl"),
            "--population", str(root / "population.jsonl"), "--out", str(out), "--cache-dir", str(root / "cache"),
            "--bootstrap", "50", "--device", "cpu", *extra]


@pytest.mark.slow
def test_audit_end_to_end_detects_members(setup, tmp_path):
    r = runner.invoke(app, _audit_args(setup, tmp_path / "out"))
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["metrics"]["loss"]["auc"] > 0.9
    assert res["metrics"]["informia"]["auc"] > 0.9
    assert set(res["metrics"]) >= {"loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token"}
    # 24 non-members cannot support a TPR at 0.1% or 1% FPR
    assert res["metrics"]["loss"]["tpr_at_fpr"]["0.1%"] is None
    assert res["metrics"]["loss"]["tpr_at_fpr"]["5%"] is not None
    assert res["settings"]["target"]["fingerprint"]
    assert res["memlens_version"]
    import pandas as pd

    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(scores.columns[:2]) == ["id", "label"] and len(scores) == 48
    assert (tmp_path / "out" / "roc.png").stat().st_size > 1000

    # the same statistics serve other attack settings without a model run
    r2 = runner.invoke(app, ["attack", "--target", str(setup / "target"), "--reference", str(setup / "base"),
                             "--members", str(setup / "members.jsonl"), "--nonmembers", str(setup / "nonmembers.jsonl"),
                             "--population", str(setup / "population.jsonl"), "--attacks", "mink,rmia",
                             "--param", "mink.k=0.5", "--param", "rmia.a=0.5", "--out", str(tmp_path / "out2"),
                             "--cache-dir", str(setup / "cache"), "--bootstrap", "0"])
    assert r2.exit_code == 0, r2.output
    res2 = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert res2["settings"]["attack_params"]["mink"]["k"] == 0.5


def test_seed_makes_runs_reproducible(setup, tmp_path):
    for run in ("a", "b"):
        r = runner.invoke(app, _audit_args(setup, tmp_path / run, "--attacks", "loss,ref", "--seed", "3"))
        assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["metrics"]
    assert a == b


def test_attack_without_cache_fails_clearly(setup, tmp_path):
    r = runner.invoke(app, ["attack", "--target", str(setup / "target"), "--members", str(setup / "members.jsonl"),
                            "--nonmembers", str(setup / "nonmembers.jsonl"), "--cache-dir", str(tmp_path / "empty")])
    assert r.exit_code == 2
    assert "no cached statistics" in r.output


def test_attacks_lists_registry():
    r = runner.invoke(app, ["attacks"])
    assert r.exit_code == 0
    for name in ("loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token"):
        assert name in r.output


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case,expect", [
    ("missing_file", "no such file"),
    ("unknown_ext", "unknown file type"),
    ("no_text_field", "no 'text' field"),
    ("empty_text", "empty text"),
    ("not_utf8", "not UTF-8"),
    ("duplicate_ids", "duplicate ids"),
    ("single_class", "metrics need both"),
    ("bad_label", "is not 1 (member) or 0"),
    ("missing_model", "does not exist"),
    ("pickle_model", "pickle"),
    ("remote_code", "pass --trust-remote-code if you trust it"),
    ("unknown_attack", "unknown attack"),
    ("needs_reference", "needs a reference"),
    ("bad_param", "has no parameter"),
])
def test_bad_inputs_one_line_error(setup, tmp_path, case, expect):
    good_m, good_n = str(setup / "members.jsonl"), str(setup / "nonmembers.jsonl")
    target = str(setup / "target")
    args = {"members": good_m, "nonmembers": good_n, "target": target, "extra": []}
    if case == "missing_file":
        args["members"] = str(tmp_path / "nope.jsonl")
    elif case == "unknown_ext":
        args["members"] = str(_write(tmp_path / "m.docx", "x"))
    elif case == "no_text_field":
        args["members"] = str(_write(tmp_path / "m.jsonl", '{"body": "hello"}\n'))
    elif case == "empty_text":
        args["members"] = str(_write(tmp_path / "m.jsonl", '{"text": "  "}\n'))
    elif case == "not_utf8":
        args["members"] = str(_write(tmp_path / "m.txt", b"caf\xe9 au lait\n"))
    elif case == "duplicate_ids":
        args["members"] = str(_write(tmp_path / "m.jsonl", '{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n'))
    elif case == "single_class":
        args["nonmembers"] = None
    elif case == "bad_label":
        args["members"] = str(_write(tmp_path / "m.jsonl", '{"text": "one", "label": 7}\n'))
    elif case == "missing_model":
        args["target"] = str(tmp_path / "no-model")
    elif case == "pickle_model":
        d = tmp_path / "pk"
        d.mkdir()
        (d / "config.json").write_text((setup / "target" / "config.json").read_text())
        for f in (setup / "target").glob("tok*"):
            (d / f.name).write_bytes(f.read_bytes())
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
        args["target"] = str(d)
    elif case == "remote_code":
        # a model whose config asks for code shipped beside it: refused, and the code never runs
        import shutil

        d = shutil.copytree(setup / "target", tmp_path / "remote")
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(model_type="memlens-test-remote",
                   auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
        args["target"] = str(d)
    elif case == "unknown_attack":
        args["extra"] = ["--attacks", "loss,telepathy"]
    elif case == "needs_reference":
        args["extra"] = ["--attacks", "ref"]
    elif case == "bad_param":
        args["extra"] = ["--attacks", "mink", "--param", "mink.q=3"]
    cmd = ["audit", "--target", args["target"], "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--bootstrap", "0"]
    if args["members"]:
        cmd += ["--members", args["members"]]
    if args["nonmembers"]:
        cmd += ["--nonmembers", args["nonmembers"]]
    r = runner.invoke(app, cmd + args["extra"])
    assert r.exit_code == 2, r.output
    assert expect in r.output
    error_lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, r.output
    assert not (tmp_path / "ran").exists()  # no model repository code was executed


def test_long_texts_are_windowed_not_truncated(setup, tmp_path):
    long = " ".join(["river stone lamp orchard violet"] * 60)  # far beyond n_positions=64
    m = _write(tmp_path / "m.jsonl", json.dumps({"text": long}) + "\n")
    n = _write(tmp_path / "n.jsonl", json.dumps({"text": "copper harbor meadow"}) + "\n")
    r = runner.invoke(app, ["audit", "--target", str(setup / "target"), "--members", str(m), "--nonmembers", str(n),
                            "--attacks", "loss", "--out", str(tmp_path / "o"), "--no-cache", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    toks = pq.read_table(tmp_path / "o" / "token_scores.parquet").to_pylist()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(setup / "target")
    assert len(toks[0]["token_ids"]) == len(tok(long, add_special_tokens=False)["input_ids"]) > 64
    assert np.isfinite(toks[0]["target_logprob"]).all()


@pytest.mark.slow
def test_torchrun_data_parallel_matches_single_process(setup, tmp_path):
    """Two torchrun processes (Gloo on CPU) split the texts, and give the single-process scores."""
    import subprocess
    import sys

    import pandas as pd
    import pyarrow.parquet as pq

    # --attack-chunk 5: the main process attacks the texts a chunk at a time, reading both processes' shards
    args = _audit_args(setup, tmp_path / "dist", "--attacks", "loss,informia_token", "--no-report", "--attack-chunk", "5")
    args[args.index("--cache-dir") + 1] = str(tmp_path / "dist-cache")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                           "-m", "memlens.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = runner.invoke(app, _audit_args(setup, tmp_path / "single", "--attacks", "loss,informia_token", "--no-report",
                                            "--no-cache"))
    assert single.exit_code == 0, single.output
    a = pd.read_csv(tmp_path / "dist" / "scores.csv")
    b = pd.read_csv(tmp_path / "single" / "scores.csv")
    # the main process waited for the other one's share at the end of each pass, then did the rest alone
    timings = json.loads((tmp_path / "dist" / "results.json").read_text())["timings"]
    assert "texts: wait for other processes" in timings and "population: wait for other processes" in timings
    assert "attacks, reads and writes of every chunk (wall)" in timings
    np.testing.assert_allclose(a[["loss", "informia_token"]].to_numpy(), b[["loss", "informia_token"]].to_numpy(), atol=1e-5)
    rows = pq.read_table(tmp_path / "dist" / "token_scores.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(a["id"].astype(str))  # every text's token rows, in the chunks' order
    # each process wrote its own share of the target's statistics
    shard_rows = sorted(pq.read_table(f).num_rows for f in (tmp_path / "dist-cache").glob("*/*.parquet"))
    assert len(shard_rows) >= 4 and max(shard_rows) < 72


def test_report_texts_option_reaches_the_report(setup, tmp_path, monkeypatch):
    """--report-texts on `audit` and `report` sets how many texts get a token view; the report's time lands in results.json."""
    import memlens.report

    seen = {}
    real_write, real_from_dir = memlens.report.write_report, memlens.report.write_report_from_dir

    def write_report(result, out, **kw):
        seen["audit"] = kw.get("report_texts")
        return real_write(result, out, **kw)

    def write_report_from_dir(d, **kw):
        seen["report"] = kw.get("report_texts")
        return real_from_dir(d, **kw)

    monkeypatch.setattr(memlens.report, "write_report", write_report)
    monkeypatch.setattr(memlens.report, "write_report_from_dir", write_report_from_dir)
    out = tmp_path / "o"
    r = runner.invoke(app, _audit_args(setup, out, "--attacks", "loss,informia_token", "--report-texts", "3"))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(out), "--report-texts", "5"])
    assert r.exit_code == 0, r.output
    assert seen == {"audit": 3, "report": 5}
    timings = json.loads((out / "results.json").read_text())["timings"]
    assert {"report", "attacks", "metrics", "texts: cache read", "save: token_scores.parquet"} <= set(timings)


def test_the_process_entry_point_exits_with_typers_status_and_flushes_its_output(tmp_path):
    """``memlens`` / ``python -m memlens`` end with os._exit after the exit handlers (memlens.cli.main): the exit
    status is typer's and everything printed reaches a pipe."""
    import subprocess
    import sys

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "memlens", *argv], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})

    ok = run("attacks")
    assert ok.returncode == 0 and "informia" in ok.stdout and ok.stdout.endswith("\n")
    assert run("--no-such-option").returncode == 2  # click's usage error
    argv = ["audit", "--target", str(tmp_path / "nowhere"), "--members", str(tmp_path / "m.jsonl"),
            "--nonmembers", str(tmp_path / "n.jsonl"), "--out", str(tmp_path / "out")]
    missing, in_process = run(*argv), runner.invoke(app, argv)
    assert missing.returncode == in_process.exit_code != 0  # the error's status, as the app gives it in process
    assert missing.stderr.startswith("error: ") and "m.jsonl: no such file" in missing.stderr


def test_the_command_line_lets_the_fast_tokenizer_use_every_core_unless_told_otherwise(monkeypatch):
    """memlens.cli._common.setup: TOKENIZERS_PARALLELISM "true" when unset (encoding on every core; set, so
    tokenizers does not warn at a fork), a value the user set kept."""
    from memlens.cli._common import setup

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    setup(False)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    setup(False)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_the_process_entry_point_waits_for_a_writer_thread_before_it_exits(tmp_path):
    """os._exit skips Python's shutdown, which waits for threads that are not daemons: memlens.cli.main waits
    for them itself, so a file being written when the command returns is whole."""
    import subprocess
    import sys

    out = tmp_path / "late.txt"
    code = ("import sys, threading, time, typer, memlens.cli as cli\n"
            "app = typer.Typer()\n"
            "@app.command()\n"
            "def go():\n"
            "    def write():\n"
            "        time.sleep(0.5)\n"
            f"        open({str(out)!r}, 'w').write('done')\n"
            "    threading.Thread(target=write).start()\n"
            "cli.app = app\n"
            "sys.argv = ['memlens']\n"
            "cli.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text() == "done"
