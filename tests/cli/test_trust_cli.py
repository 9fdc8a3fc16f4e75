"""Issue 16 through the command line: the blind baseline with every labelled audit and as `memlens
blind`, `memlens setinfer`, `--redact`, `--revision`, and benchmark inputs (`--benchmark --preset`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from memlens.cli import app
from memlens.redact import leaked_values
from memlens.setinfer import synthetic_scores
from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
from memlens.testbed.profiles import UNIQUE_PII_TYPES
from memlens.testbed.shifted import shifted_pair, write_shifted_pair

os.environ["HF_HUB_OFFLINE"] = "1"
runner = CliRunner()


def _audit(gpt2, gpt2_ref, members, nonmembers, out, *extra):
    return runner.invoke(app, ["audit", "--target", str(gpt2.path), "--reference", str(gpt2_ref.path), "--members", str(members),
                               "--nonmembers", str(nonmembers), "--out", str(out), "--no-cache", "--bootstrap", "200",
                               "--device", "cpu", "--attacks", "loss,zlib,ref", *extra])


@pytest.fixture(scope="module")
def testbed_data(tmp_path_factory):
    return build_testbed(tmp_path_factory.mktemp("tb"), TestbedConfig.quick())


@pytest.fixture(scope="module")
def shifted_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shifted")
    r = runner.invoke(app, ["blind", "--shifted-pair", str(d), "--n", "16"])
    assert r.exit_code == 0, r.output
    return d


# ---------------------------------------------------------------------------------------------
# blind baseline


def test_blind_command_testbed_is_near_chance(testbed_data, tmp_path):
    r = runner.invoke(app, ["blind", "--members", str(testbed_data.members), "--nonmembers", str(testbed_data.nonmembers),
                            "--bootstrap", "200", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "sets look alike" in r.output and "WARNING" not in r.output and "verdict: ok" in r.output
    d = json.loads((tmp_path / "blind.json").read_text())
    assert d["verdict"] == "ok" and abs(d["metrics"]["auc"] - 0.5) < 0.1 and d["warning"] is None
    scores = pd.read_csv(tmp_path / "blind_scores.csv")
    assert list(scores.columns) == ["id", "label", "blind"] and len(scores) == 96 and scores["blind"].between(0, 1).all()


def test_blind_command_shifted_pair_warns(shifted_dir, tmp_path):
    assert len(read_jsonl(shifted_dir / "members.jsonl")) == 16
    r = runner.invoke(app, ["blind", "--members", str(shifted_dir / "members.jsonl"), "--nonmembers",
                            str(shifted_dir / "nonmembers.jsonl"), "--bootstrap", "200", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "WARNING: members and non-members differ" in r.output and "verdict: differ" in r.output
    d = json.loads((tmp_path / "blind.json").read_text())
    assert d["verdict"] == "differ" and d["metrics"]["auc"] >= 0.9


def test_blind_command_bad_input_is_one_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"text": "only one"}) + "\n")
    r = runner.invoke(app, ["blind", "--members", str(p), "--nonmembers", str(p)])
    assert r.exit_code == 2 and r.output.count("error:") == 1, r.output


def test_audit_shifted_pair_warns_in_cli_results_and_report(gpt2, gpt2_ref, shifted_dir, tmp_path):
    out = tmp_path / "out"
    r = _audit(gpt2, gpt2_ref, shifted_dir / "members.jsonl", shifted_dir / "nonmembers.jsonl", out)
    assert r.exit_code == 0, r.output
    # printed before the metrics table
    assert "WARNING: members and non-members differ" in r.output
    assert r.output.index("WARNING: members and non-members differ") < r.output.index("membership inference")
    res = json.loads((out / "results.json").read_text())
    assert res["blind"]["verdict"] == "differ" and res["blind"]["metrics"]["auc"] >= 0.9
    assert res["notes"][0] == res["blind"]["warning"]
    html = (out / "report.html").read_text()
    assert 'id="blindBanner"' in html and "cannot be read as memorization" in html and 'id="blindRow"' in html


def test_audit_testbed_has_no_warning_and_no_blind_skips_it(gpt2, gpt2_ref, testbed_data, tmp_path):
    out = tmp_path / "out"
    r = _audit(gpt2, gpt2_ref, testbed_data.members, testbed_data.nonmembers, out, "--attacks", "loss")
    assert r.exit_code == 0, r.output
    # Same distribution: near 0.5 and no "differ" warning. (These random tiny models' attacks are at
    # chance too, so a blind AUC above the best attack may read "inconclusive": never "differ".)
    assert "WARNING" not in r.output and "blind baseline (model-free): AUC" in r.output
    res = json.loads((out / "results.json").read_text())
    assert res["blind"]["verdict"] in ("ok", "inconclusive") and abs(res["blind"]["metrics"]["auc"] - 0.5) < 0.1
    html = (out / "report.html").read_text()
    assert "banner differ" not in html and 'id="blindRow"' in html
    r = _audit(gpt2, gpt2_ref, testbed_data.members, testbed_data.nonmembers, tmp_path / "nb", "--attacks", "loss", "--no-blind",
               "--no-report")
    assert r.exit_code == 0, r.output
    assert "blind" not in json.loads((tmp_path / "nb" / "results.json").read_text()) and "blind baseline" not in r.output


def test_api_blind_keyword(gpt2, gpt2_ref):
    import memlens

    m, n = shifted_pair(8)
    kw = dict(tokenizer=gpt2.tokenizer, attacks=["loss"], cache_dir=None, n_bootstrap=50, progress=False, device="cpu")
    res = memlens.audit(gpt2.model, None, members=m, nonmembers=n, **kw)
    assert res.extra["blind"]["verdict"] in ("differ", "inconclusive") and res.notes[0] == res.extra["blind"]["warning"]
    assert "blind" not in memlens.audit(gpt2.model, None, members=m, nonmembers=n, blind=False, **kw).extra
    # too few texts to cross-validate: a note, not a failed audit
    small = memlens.audit(gpt2.model, None, members=m[:1], nonmembers=n[:1], **kw)
    assert "blind" not in small.extra and any(x.startswith("blind baseline skipped") for x in small.notes)


# ---------------------------------------------------------------------------------------------
# set inference


def _scores_csv(path: Path, shift: float, n: int = 80, seed: int = 0) -> Path:
    s = synthetic_scores(n, shift=shift, seed=seed)
    u = synthetic_scores(n, seed=seed + 100)
    df = pd.concat([s.assign(label=1), u.assign(label=0)], ignore_index=True)
    df.insert(0, "id", [f"t{i}" for i in range(len(df))])
    df.to_csv(path, index=False)
    return path


def test_setinfer_from_saved_scores_detects_a_shift(tmp_path):
    p = _scores_csv(tmp_path / "scores.csv", shift=0.8)
    r = runner.invoke(app, ["setinfer", "--scores", str(p), "--sizes", "10,20,40,80", "--draws", "10", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "p-value:" in r.output and "texts needed for p < 0.01:" in r.output
    d = json.loads((tmp_path / "o" / "setinfer.json").read_text())
    assert d["result"]["detected"] and d["result"]["p_value"] < 0.01
    assert d["result"]["attacks"] == ["attack0", "attack1", "attack2"]  # id and label are not scores
    assert [row["size"] for row in d["curve"]["curve"]] == [10, 20, 40, 80]
    assert d["curve"]["n_needed"] is not None and d["curve"]["n_needed"] <= 80
    assert (tmp_path / "o" / "pvalue_curve.png").stat().st_size > 1000


def test_setinfer_two_unseen_sets_not_detected_and_mannwhitney(tmp_path):
    s, u = synthetic_scores(60, seed=1), synthetic_scores(60, seed=2)
    s.to_csv(tmp_path / "s.csv", index=False)
    u.to_csv(tmp_path / "u.csv", index=False)
    r = runner.invoke(app, ["setinfer", "--suspect-scores", str(tmp_path / "s.csv"), "--unseen-scores", str(tmp_path / "u.csv"),
                            "--test", "mannwhitney", "--no-curve", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "o" / "setinfer.json").read_text())
    assert not d["result"]["detected"] and d["result"]["test"] == "mannwhitney" and "curve" not in d
    assert not (tmp_path / "o" / "pvalue_curve.png").exists()


def test_setinfer_crossfit_permutation(tmp_path):
    p = _scores_csv(tmp_path / "scores.csv", shift=1.0, n=30)
    r = runner.invoke(app, ["setinfer", "--scores", str(p), "--method", "crossfit", "--permutations", "19", "--no-curve",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "o" / "setinfer.json").read_text())
    assert d["result"]["method"] == "crossfit" and d["result"]["p_value"] == pytest.approx(1 / 20)


@pytest.mark.parametrize("args, says", [
    (["--attacks", "nope"], "no score column 'nope'"),
    (["--test", "ztest"], "unknown test"),
])
def test_setinfer_bad_input_is_one_line(tmp_path, args, says):
    p = _scores_csv(tmp_path / "scores.csv", shift=0.0, n=20)
    r = runner.invoke(app, ["setinfer", "--scores", str(p), "--no-curve", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and says in r.output and r.output.count("error:") == 1, r.output


# ---------------------------------------------------------------------------------------------
# redaction


@pytest.fixture(scope="module")
def pii_records(tmp_path_factory):
    d = tmp_path_factory.mktemp("pii")
    m, n = write_shifted_pair(d, 6, seed=5)  # testbed documents with their pii spans
    values = [p["value"] for path in (m, n) for rec in read_jsonl(path) for p in rec["pii"] if p["type"] in UNIQUE_PII_TYPES]
    return m, n, values


def test_redact_leaves_no_pii_under_out_and_keeps_scores(gpt2, gpt2_ref, pii_records, tmp_path):
    m, n, values = pii_records
    assert len(values) > 20
    plain, red = tmp_path / "plain", tmp_path / "red"
    assert _audit(gpt2, gpt2_ref, m, n, plain).exit_code == 0
    assert leaked_values(plain, values)  # the check can fail: without --redact the secrets are everywhere
    r = _audit(gpt2, gpt2_ref, m, n, red, "--redact", "--attacks", "loss,zlib,ref,informia_token")
    assert r.exit_code == 0, r.output
    assert leaked_values(red, values) == []
    a, b = pd.read_csv(plain / "scores.csv"), pd.read_csv(red / "scores.csv")
    pd.testing.assert_frame_equal(a[["id", "label", "loss", "zlib", "ref"]], b[["id", "label", "loss", "zlib", "ref"]])
    res = json.loads((red / "results.json").read_text())
    assert res["redacted"]["spans"] > 0 and any(x.startswith("redacted:") for x in res["notes"])
    assert json.loads((plain / "results.json").read_text())["metrics"]["loss"] == res["metrics"]["loss"]
    html = (red / "report.html").read_text()
    assert 'id="redactedBanner"' in html and "[SSN#" in html
    import pyarrow.parquet as pq

    tok = pq.read_table(red / "token_scores.parquet").to_pydict()
    for t, s0, s1, text in zip(tok["tokens"], tok["span_start"], tok["span_end"],
                               [json.loads(x)["text"] for x in (red / "texts.jsonl").read_text().splitlines()]):
        assert "".join(t) == text[s0[0]:max(s1)]  # token spans remapped onto the redacted text
    assert any(-1 in ids for ids in tok["token_ids"])
    plain_tok = pq.read_table(plain / "token_scores.parquet").to_pydict()
    assert plain_tok["target_logprob"] == tok["target_logprob"]  # per-token numbers kept, one per token
    assert all(len(a) == len(b) for a, b in zip(plain_tok["tokens"], tok["tokens"]))


def test_redact_threshold_and_report_command(gpt2, gpt2_ref, pii_records, tmp_path):
    m, n, values = pii_records
    plain = tmp_path / "plain"
    assert _audit(gpt2, gpt2_ref, m, n, plain, "--attacks", "loss,informia_token").exit_code == 0
    # the report of a saved audit, redacted (written elsewhere: the directory keeps its secrets)
    shared = tmp_path / "shared"
    shared.mkdir()
    r = runner.invoke(app, ["report", str(plain), "--redact", "--out", str(shared / "report.html")])
    assert r.exit_code == 0, r.output
    assert leaked_values(shared, values) == [] and 'id="redactedBanner"' in (shared / "report.html").read_text()
    # every token above the threshold too: far more spans than the pii alone
    red, red_t = tmp_path / "red", tmp_path / "red_t"
    assert _audit(gpt2, gpt2_ref, m, n, red, "--redact", "--attacks", "loss,informia_token", "--no-report").exit_code == 0
    r = _audit(gpt2, gpt2_ref, m, n, red_t, "--redact-threshold", "-100", "--attacks", "loss,informia_token", "--no-report")
    assert r.exit_code == 0, r.output
    n_pii = json.loads((red / "results.json").read_text())["redacted"]["spans"]
    d = json.loads((red_t / "results.json").read_text())["redacted"]
    assert d["token_attack"] == "informia_token" and d["spans"] > 0 and leaked_values(red_t, values) == []
    # a threshold below every score redacts every token: each text is one placeholder
    assert d["spans"] == 12 and n_pii > 12
    r = _audit(gpt2, gpt2_ref, m, n, tmp_path / "x", "--redact-threshold", "1", "--attacks", "loss", "--no-report")
    assert r.exit_code == 2 and "token-level scores" in r.output


# ---------------------------------------------------------------------------------------------
# revisions and benchmarks


def test_revision_reaches_target_and_reference_options(gpt2, gpt2_ref, shifted_dir, monkeypatch, tmp_path):
    import memlens

    seen = {}

    def fake_audit(target, refs, **kw):
        seen.update(target=target, refs=refs, **kw)
        raise memlens.errors.DataError("stop here")

    monkeypatch.setattr(memlens, "audit", fake_audit)
    r = runner.invoke(app, ["audit", "--target", str(gpt2.path), "--reference", str(gpt2_ref.path), "--members",
                            str(shifted_dir / "members.jsonl"), "--nonmembers", str(shifted_dir / "nonmembers.jsonl"),
                            "--revision", "v1", "--reference-revision", "abc123", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "stop here" in r.output
    assert seen["load"].revision == "v1" and seen["load"].device == "cpu"
    assert [h.options.revision for h in seen["refs"]] == ["abc123"]
    # only --revision: the references keep their default revision
    runner.invoke(app, ["audit", "--target", str(gpt2.path), "--reference", str(gpt2_ref.path), "--members",
                        str(shifted_dir / "members.jsonl"), "--nonmembers", str(shifted_dir / "nonmembers.jsonl"),
                        "--revision", "v2", "--out", str(tmp_path)])
    assert seen["load"].revision == "v2" and [h.options.revision for h in seen["refs"]] == [None]
    for cmd in ("score", "extract", "attack"):
        assert "--revision" in runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"}).output


def _wikimia(path: Path, n: int = 8) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    m, nm = shifted_pair(n, seed=2)
    pq.write_table(pa.table({"input": [r["text"] for r in m + nm], "label": [1] * n + [0] * n}), path)
    return path


def _mimir(path: Path, n: int = 8) -> Path:
    m, nm = shifted_pair(n, seed=3)
    path.write_text("".join(json.dumps({"member": a["text"], "nonmember": b["text"]}) + "\n" for a, b in zip(m, nm)))
    return path


@pytest.mark.parametrize("make, preset", [(_wikimia, "wikimia"), (_mimir, "mimir")])
def test_audit_benchmark_presets(gpt2, make, preset, tmp_path):
    src = make(tmp_path / ("bench.parquet" if preset == "wikimia" else "bench.jsonl"))
    out = tmp_path / "out"
    r = runner.invoke(app, ["audit", "--target", str(gpt2.path), "--benchmark", str(src), "--preset", preset, "--attacks", "loss",
                            "--out", str(out), "--no-cache", "--bootstrap", "50", "--device", "cpu", "--no-report"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["n_texts"] == 16 and res["metrics"]["loss"]["n_members"] == 8
    assert res["blind"]["verdict"] in ("differ", "inconclusive")  # the shifted pair: the check fires on benchmarks too
    r = runner.invoke(app, ["audit", "--target", str(gpt2.path), "--benchmark", str(src), "--preset", preset, "--attacks", "loss",
                            "--limit", "4", "--out", str(tmp_path / "o2"), "--no-cache", "--bootstrap", "0", "--no-blind", "--no-report"])
    assert r.exit_code == 0 and json.loads((tmp_path / "o2" / "results.json").read_text())["n_texts"] == 8


def test_audit_benchmark_bad_fields_one_line(gpt2, tmp_path):
    src = _wikimia(tmp_path / "bench.parquet")
    base = ["audit", "--target", str(gpt2.path), "--benchmark", str(src), "--out", str(tmp_path / "o"), "--no-cache"]
    r = runner.invoke(app, [*base, "--preset", "mimir"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "no 'member' field (fields: input, label)" in r.output, r.output
    r = runner.invoke(app, [*base, "--text-field", "inputs", "--label-field", "label"])
    assert r.exit_code == 2 and "no 'inputs' field" in r.output, r.output
    r = runner.invoke(app, [*base, "--preset", "wikimia", "--members", str(src)])
    assert r.exit_code == 2 and "not both" in r.output


def test_audit_benchmark_save_to_disk_split(gpt2, tmp_path):
    datasets = pytest.importorskip("datasets")
    # A MIMIR-style DatasetDict written with save_to_disk: --split picks the split, the same path as files.
    m, nm = shifted_pair(6, seed=4)
    src = tmp_path / "pile_cc"
    datasets.DatasetDict({"ngram_13_0.2": datasets.Dataset.from_dict({"member": [r["text"] for r in m],
                                                                      "nonmember": [r["text"] for r in nm]})}).save_to_disk(str(src))
    base = ["audit", "--target", str(gpt2.path), "--benchmark", str(src), "--preset", "mimir", "--attacks", "loss", "--no-cache",
            "--bootstrap", "0", "--no-blind", "--no-report", "--device", "cpu"]
    r = runner.invoke(app, [*base, "--split", "ngram_13_0.2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["n_texts"] == 12 and res["metrics"]["loss"]["n_members"] == 6
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "holds splits ngram_13_0.2; choose one with split=" in r.output, r.output
