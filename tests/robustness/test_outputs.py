"""Issue 12, items 5, 6 and 10: output locations checked before the pass, outputs written as one set
(staging directory, manifest.json), stale files removed, and readers that refuse damaged or mixed sets."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memlens import outputs
from memlens.cli import app
from memlens.errors import DataError
from memlens.outputs import OutputError, check_location, preflight, verify_set
from memlens.report import load_saved, write_report, write_report_from_dir
from memlens.report._synthetic import synthetic_result

runner = CliRunner()


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def result():
    return synthetic_result(12, 20, n_bootstrap=0)


def _save_with_report(result, out: Path) -> Path:
    return result.save(out, extra={"report.html": lambda p: write_report(result, p.parent)}, info={"command": "audit"})


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (real full-disk and read-only cases); skipped where mount is not allowed."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


# -- 5: locations checked before the pass -----------------------------------------------------

def test_out_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    f = tmp_path / "results"
    f.write_text("not a directory")
    with pytest.raises(OutputError, match="is a file; give a directory"):
        check_location(f, "--out")
    with pytest.raises(OutputError, match=r"is under .*results, which is a file"):
        check_location(f / "sub" / "dir", "--out")


def test_too_little_free_disk_is_refused_up_front(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(OutputError, match=r"has 5 MiB free; this run needs about \d+ MiB"):
        preflight(tmp_path / "out", tmp_path / "cache", n_chars=3_000_000, n_models=2)


def test_read_only_location_is_refused(tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(OutputError, match="cannot be written: Read-only file system"):
        check_location(tmpfs / "out", "--out")


def test_cli_checks_out_before_loading_any_model(tmp_path):
    """The target does not exist: the --out error comes first, so it was checked before any model load."""
    (tmp_path / "m.txt").write_text("a member text\n")
    (tmp_path / "n.txt").write_text("a non-member text\n")
    (tmp_path / "outfile").write_text("x")
    r = runner.invoke(app, ["audit", "--target", str(tmp_path / "no-such-model"), "--members", str(tmp_path / "m.txt"),
                            "--nonmembers", str(tmp_path / "n.txt"), "--out", str(tmp_path / "outfile"),
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 2 and "is a file; give a directory" in r.output and len(r.output.strip().splitlines()) == 1


# -- 6: outputs written as one set ------------------------------------------------------------

def test_manifest_lists_every_file_with_its_hash(result, tmp_path):
    out = _save_with_report(result, tmp_path / "out")
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["files"]) == {"scores.csv", "texts.jsonl", "results.json", "token_scores.parquet", "roc.png", "report.html"}
    assert m["files"]["scores.csv"]["sha256"] == outputs.sha256_file(out / "scores.csv") and m["command"] == "audit"
    assert not list(out.glob(".staging-*")) and verify_set(out) == m


def test_no_report_into_a_reused_dir_removes_the_stale_report_and_keeps_foreign_files(result, tmp_path):
    out = _save_with_report(result, tmp_path / "out")
    (out / "my-notes.txt").write_text("mine")
    no_metrics = synthetic_result(12, 20, n_bootstrap=0)
    no_metrics.metrics = {}
    no_metrics.save(out, report=False)  # like --no-report, and no roc.png either
    assert not (out / "report.html").exists() and not (out / "roc.png").exists()
    assert (out / "my-notes.txt").read_text() == "mine"
    verify_set(out)


def test_disk_full_on_the_third_file_leaves_the_previous_set_intact(result, tmp_path, monkeypatch):
    out = _save_with_report(result, tmp_path / "out")
    before = _files(out)
    calls = []
    real = outputs._write_one

    def third_fails(write, path):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(write, path)

    monkeypatch.setattr(outputs, "_write_one", third_fails)
    with pytest.raises(OutputError, match="the disk is full; the files already there are unchanged"):
        synthetic_result(12, 20, seed=1, n_bootstrap=0).save(out)
    assert _files(out) == before and not list(out.glob(".staging-*"))
    assert load_saved(out).results["n_texts"] == 12


def test_a_real_full_disk_leaves_the_previous_set_intact(tmpfs):
    small = synthetic_result(4, 10, n_bootstrap=0)
    small.save(tmpfs)
    before = _files(tmpfs)
    with pytest.raises(OutputError, match="the disk is full"):
        synthetic_result(600, 400, n_bootstrap=0).save(tmpfs)  # a few MiB of token scores: more than the 1 MiB disk
    assert _files(tmpfs) == before and not list(tmpfs.glob(".staging-*"))


def test_readers_refuse_a_set_that_does_not_match_its_manifest(result, tmp_path):
    out = _save_with_report(result, tmp_path / "out")
    other = _save_with_report(synthetic_result(12, 20, seed=3, n_bootstrap=0), tmp_path / "other")
    shutil.copy(other / "results.json", out / "results.json")  # e.g. a kill between the renames of a new set
    with pytest.raises(DataError, match=r"results.json does not match manifest.json"):
        load_saved(out)
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 2 and "does not match manifest.json" in r.output
    r = runner.invoke(app, ["show", result.samples[0].id, "--results", str(out)])
    assert r.exit_code == 2 and "does not match manifest.json" in r.output


def test_report_rebuilds_a_deleted_report_and_records_it(result, tmp_path):
    out = _save_with_report(result, tmp_path / "out")
    (out / "report.html").unlink()
    write_report_from_dir(out)
    m = verify_set(out)
    assert m["files"]["report.html"]["sha256"] == outputs.sha256_file(out / "report.html")


# -- 10: memlens report on damaged or inconsistent inputs (sets without a manifest, as older versions wrote)

@pytest.fixture
def legacy(result, tmp_path):
    out = _save_with_report(result, tmp_path / "out")
    (out / "manifest.json").unlink()
    return out


def _report_fails(out: Path, match: str) -> None:
    """load_saved raises; ``memlens report`` prints one line (exit 2) and writes no report."""
    (out / "report.html").unlink()
    with pytest.raises(DataError, match=match):
        load_saved(out)
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
    assert not (out / "report.html").exists()


def test_truncated_scores_csv(legacy):
    raw = (legacy / "scores.csv").read_bytes()
    (legacy / "scores.csv").write_bytes(raw[: len(raw) // 2])
    _report_fails(legacy, "is truncated")


def test_scores_csv_cut_at_a_line_end(legacy):
    raw = (legacy / "scores.csv").read_bytes()
    lines = raw.splitlines(keepends=True)
    (legacy / "scores.csv").write_bytes(b"".join(lines[:5]))
    _report_fails(legacy, "scores.csv has 4 texts but results.json says 12")


def test_ids_missing_from_texts_jsonl(legacy):
    lines = (legacy / "texts.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (legacy / "texts.jsonl").write_text("".join(lines[:-2]), encoding="utf-8")
    _report_fails(legacy, "texts.jsonl lacks 2 of the 12 texts")


def test_attack_in_results_without_a_column(legacy):
    res = json.loads((legacy / "results.json").read_text())
    res["metrics"]["phantom"] = res["metrics"]["loss"]
    (legacy / "results.json").write_text(json.dumps(res))
    _report_fails(legacy, "results.json has the attack 'phantom' but .*scores.csv has no column for it")


def test_corrupt_parquet(legacy):
    raw = (legacy / "token_scores.parquet").read_bytes()
    (legacy / "token_scores.parquet").write_bytes(raw[:100] + b"\0" * 64 + raw[-50:])
    _report_fails(legacy, "token_scores.parquet cannot be read")


def test_write_set_writes_its_chains_at_once_and_fails_as_one_set(tmp_path):
    """Chains run on threads at the same time (each writer below waits for the other chain's), the files in
    no chain after them; a failing chain leaves the directory as it was, after the other chains finished."""
    import threading

    started = {n: threading.Event() for n in ("a", "b")}

    def writer(me: str, other: str, text: str):
        def write(path: Path) -> None:
            started[me].set()
            assert started[other].wait(10), "the chains ran one after the other"
            path.write_text(text)
        return write

    order: list[str] = []

    def last(path: Path) -> None:
        order.append("results.json")
        assert (path.parent / "scores.csv").is_file() and (path.parent / "texts.jsonl").is_file()
        path.write_text("{}")

    out = tmp_path / "out"
    outputs.write_set(out, {"scores.csv": writer("a", "b", "x"), "texts.jsonl": writer("b", "a", "y"), "results.json": last},
                      concurrent=[["scores.csv"], ["texts.jsonl"]])
    assert (out / "scores.csv").read_text() == "x" and order == ["results.json"]

    def broken(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    done = []
    with pytest.raises(OutputError, match="disk is full"):
        outputs.write_set(out, {"scores.csv": broken, "texts.jsonl": lambda p: (p.write_text("z"), done.append(1)),
                                "results.json": last}, concurrent=[["scores.csv"], ["texts.jsonl"]])
    assert done == [1] and (out / "scores.csv").read_text() == "x" and (out / "texts.jsonl").read_text() == "y"
