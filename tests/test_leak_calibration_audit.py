"""The audit calibrates the leak threshold on non-member tokens; results.json, the report, `show` and the
CLI use it; a non-member text is flagged as leaking at about the stated rate."""
import json
import math
import re

import numpy as np
from rich.console import Console

import memlens
from memlens.leakage import DEFAULT_NULL_RATE, text_leak
from memlens.report import show_text


def _audit(gpt2, gpt2_ref, corpus, members, nonmembers, population=None):
    return memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], members=members, nonmembers=nonmembers, population=population,
                         attacks=["loss", "informia_token"], cache_dir=None, n_bootstrap=0, progress=False)


def test_non_member_texts_flag_at_the_stated_rate(gpt2, gpt2_ref, corpus, tmp_path):
    # random tiny models: no text is memorized, so every text is a draw from the null
    texts = corpus + [f"{a} {b}" for a, b in zip(corpus, corpus[1:])]
    result = _audit(gpt2, gpt2_ref, corpus, texts[:20], texts[20:])
    lt = result.extra["leak_threshold"]
    assert lt["source"] == "non-member tokens" and lt["rate"] == DEFAULT_NULL_RATE and lt["attack"] == "informia_token"
    toks = result.token_scores["informia_token"]
    labels = [s.label for s in result.samples]
    non = [t for t, y in zip(toks, labels) if y == 0]
    allv = np.concatenate(non)
    assert lt["n_tokens"] == allv.size and (allv > lt["value"]).mean() <= DEFAULT_NULL_RATE
    flagged = [text_leak(t, lt["value"], lt["rate"])["leaking"] for t in non]
    n = len(non)
    noise = 3 * math.sqrt(DEFAULT_NULL_RATE * (1 - DEFAULT_NULL_RATE) / n) + 1 / n  # three standard errors, one text of slack
    assert np.mean(flagged) <= DEFAULT_NULL_RATE + noise
    # the members (not memorized either) are not flagged wholesale as they were at the fixed 1 bit
    mem = [t for t, y in zip(toks, labels) if y == 1]
    assert np.mean([text_leak(t, lt["value"], lt["rate"])["leaking"] for t in mem]) <= 0.2

    # saved in results.json, and save() writes the report (opt-out: report=False)
    result.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "results.json").read_text())["leak_threshold"]["value"] == lt["value"]
    html = (tmp_path / "a" / "report.html").read_text()
    payload = json.loads(re.search(r'<script type="application/json" id="memlens-data">(.*?)</script>', html, re.S).group(1))
    assert payload["threshold"] == math.ceil(lt["value"] * 100 - 1e-9) / 100 and payload["leak"]["source"] == "non-member tokens"
    result.save(tmp_path / "b", report=False)
    assert not (tmp_path / "b" / "report.html").exists() and (tmp_path / "b" / "results.json").is_file()

    # `memlens show` takes the calibrated level by default and says what a non-member shows by chance
    console = Console(record=True, width=200)
    shown = show_text(tmp_path / "a", result.samples[-1].id, console=console)
    assert shown["threshold"] == payload["threshold"] and shown["expected_by_chance"] is not None
    assert "of non-member tokens exceed" in console.export_text()
    fixed = show_text(tmp_path / "a", result.samples[-1].id, threshold=1.0, console=Console(record=True))
    assert fixed["threshold"] == 1.0 and "expected_by_chance" not in fixed


def test_without_non_members_the_population_calibrates(gpt2, gpt2_ref, corpus):
    result = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], data=[{"text": t} for t in corpus[:10]], population=corpus[10:40],
                           attacks=["informia_token"], cache_dir=None, n_bootstrap=0, progress=False, require_labels=False)
    lt = result.extra["leak_threshold"]
    assert lt["source"] == "population tokens" and lt["n_texts"] == 30
    # and with neither, the fixed level, said as such
    bare = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], data=[{"text": t} for t in corpus[:10]],
                         attacks=["informia_token"], cache_dir=None, n_bootstrap=0, progress=False, require_labels=False)
    assert bare.extra["leak_threshold"]["source"] == "fixed" and bare.extra["leak_threshold"]["rate"] is None
