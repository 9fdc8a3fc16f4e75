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
    # "leaked" is calibrated, and so is "leaking": at the default threshold at most the stated share of non-member texts
    # is flagged (each judged against the other non-members), and the 16x members are
    import math

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from memlens.leakage import DEFAULT_TEXT_RATE, flag_texts

    lt = res["leak_threshold"]
    assert lt["source"] == "non-member tokens" and lt["rate"] == 0.001
    tn = lt["text"]
    assert tn["source"] == "non-member texts" and tn["n_texts"] == 48
    assert tn["rate"] == max(DEFAULT_TEXT_RATE, 1 / 49)  # 48 non-member texts resolve no finer rate than 1/49
    tab = pq.read_table(out / "token_scores.parquet", columns=["id", "label", "informia_token_token"]).to_pydict()
    tiers = pd.read_csv(out / "scores.csv", dtype={"id": str}).set_index("id")["tier"]
    toks = [np.asarray(t, dtype=float) for t in tab["informia_token_token"]]
    flags = np.array(flag_texts(toks, tab["id"], tab["label"], lt["value"], lt["rate"], tn), dtype=bool)
    label = np.array(tab["label"])
    tier = np.array([tiers[i] if y == 1 else 0 for i, y in zip(tab["id"], label)])
    non = flags[label == 0]
    assert non.mean() <= tn["rate"] + 3 * math.sqrt(tn["rate"] * (1 - tn["rate"]) / non.size)
    assert tn["flagged"]["non-members"] == [int(non.sum()), 48] and tn["flagged"]["members"] == [int(flags[label == 1].sum()), 48]
    # measured on this demo: 4 of 16 16x members flagged, no 1x or 4x member, no non-member (the binomial tail alone
    # flagged 8 of 16 16x members and 2 of 48 non-members: those two have 3 tokens above the level each)
    assert flags[tier == 16].sum() >= 2 and flags[tier == 16].mean() > flags[tier == 1].mean()
    assert "than all but 2.04% of the 48 non-member texts (so at most 2.04% of non-members are flagged)" in " ".join(r.output.split())
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
