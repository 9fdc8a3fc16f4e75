"""`memlens demo --quick` end to end: real detection, extraction and localization on the testbed."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from memlens.cli import app

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.mark.slow
def test_quick_demo_detects_extracts_and_localizes(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    demo = res["demo"]
    # membership inference: InfoRMIA separates the 16x tier and beats the loss attack overall
    assert demo["per_tier"]["16x"]["informia"]["auc"] > 0.9
    assert res["metrics"]["informia"]["auc"] > res["metrics"]["loss"]["auc"]
    # extraction rises with repetition; non-member PII is never produced
    by_tier = demo["extraction"]["by_tier"]
    assert by_tier["1"]["exact"] <= by_tier["4"]["exact"] <= by_tier["16"]["exact"]
    assert by_tier["16"]["exact"] > 0.3
    assert demo["extraction"]["nonmembers"]["exact"] == 0
    # token-level InfoRMIA points at PII tokens better than the loss-only token score
    loc = demo["localization"]
    assert loc["informia_token"]["auc"] > loc["loss_token"]["auc"]
    for f in ("scores.csv", "roc.png", "token_scores.parquet", "extraction.jsonl", "texts.jsonl"):
        assert (out / f).is_file(), f
    assert (out / "testbed" / "models" / "target" / "model.safetensors").is_file()

    # the output explains itself and says how to go on
    for words in ("0.5 = chance", "TPR@1%FPR:", "tiers:", "extraction:", "report.html", "memlens show ", "memlens audit --target"):
        assert words in r.output, words
    # "leaked" is calibrated: at the default threshold about the stated rate of non-member texts leak
    import numpy as np
    import pyarrow.parquet as pq

    from memlens.leakage import text_leak

    lt = res["leak_threshold"]
    assert lt["source"] == "non-member tokens" and lt["rate"] == 0.001
    tab = pq.read_table(out / "token_scores.parquet", columns=["label", "informia_token_token"]).to_pydict()
    non = [np.asarray(t, dtype=float) for t, y in zip(tab["informia_token_token"], tab["label"]) if y == 0]
    flagged = np.mean([text_leak(t, lt["value"], lt["rate"])["leaking"] for t in non])
    # Each text is tested at level `rate` by a binomial tail that assumes independent tokens; tokens of
    # one text are correlated, so more non-member texts are flagged than `rate` (2 of 48 seen on this
    # quick demo). Bound what we measured rather than what independence would give.
    assert flagged <= 0.1
    # the extraction results are in the report
    assert 'id="extraction"' in (out / "report.html").read_text()

    # a second run reuses the trained models, says so, and is much faster
    import time

    t0 = time.perf_counter()
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "reusing trained models from" in again.output
    assert json.loads((out / "testbed" / "models" / "training.json").read_text())["trained"] == []
    first_s = demo["timings"]["total_s"]
    assert time.perf_counter() - t0 < 0.6 * first_s
