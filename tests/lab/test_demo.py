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
