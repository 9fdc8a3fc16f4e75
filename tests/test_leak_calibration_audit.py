"""The audit calibrates the leak threshold on non-member tokens; results.json, the report, `show` and the
CLI use it; a non-member text is flagged as leaking at about the stated rate."""
import json
import math
import re

import numpy as np
from rich.console import Console

import memlens
from memlens.leakage import DEFAULT_NULL_RATE, DEFAULT_TEXT_RATE, flag_texts, text_leak
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
    toks = [np.asarray(t, dtype=np.float32).astype(float) for t in result.token_scores["informia_token"]]  # as saved
    labels = [s.label for s in result.samples]
    non = [t for t, y in zip(toks, labels) if y == 0]
    allv = np.concatenate(non)
    assert lt["n_tokens"] == allv.size and (allv > lt["value"]).mean() <= DEFAULT_NULL_RATE
    # each text against the non-member texts (each non-member against the others): at most the stated share of them
    tn = lt["text"]
    assert tn["source"] == "non-member texts" and tn["n_texts"] == len(non) and tn["rate"] == max(DEFAULT_TEXT_RATE, 1 / (len(non) + 1))
    ids = [s.id for s in result.samples]
    flags = flag_texts(toks, ids, labels, lt["value"], lt["rate"], tn)
    non_flags = [f for f, y in zip(flags, labels) if y == 0]
    assert np.mean(non_flags) <= tn["rate"]
    assert tn["flagged"] == {"members": [sum(f for f, y in zip(flags, labels) if y == 1), 20], "non-members": [sum(non_flags), len(non)]}
    # the per-text numbers: a non-member is judged against the other non-members
    r = text_leak(non[0], lt["value"], lt["rate"], tn, ids[20])
    assert r["null_n"] == len(non) - 1 and r["leaking"] == flags[20]
    # the members (not memorized either) are not flagged wholesale as they were at the fixed 1 bit
    assert np.mean([f for f, y in zip(flags, labels) if y == 1]) <= 0.2

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
    last = len(labels) - 1  # a non-member: judged against the other non-members
    assert shown["null_n"] == len(non) - 1 and shown["leaking"] == flags[last]
    said = " ".join(console.export_text().split())
    assert "of non-member tokens exceed" in said and f"of {len(non) - 1} non-member texts have as many above it" in said
    assert payload["texts"][last]["flag"] == {"leaking": flags[last], "m": shown["null_as_extreme"], "n": len(non) - 1, "exact": True}
    assert "a text is flagged as leaking when at most" in html
    fixed = show_text(tmp_path / "a", result.samples[-1].id, threshold=1.0, console=Console(record=True))
    assert fixed["threshold"] == 1.0 and "expected_by_chance" not in fixed


def test_without_non_members_the_population_calibrates(gpt2, gpt2_ref, corpus):
    result = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], data=[{"text": t} for t in corpus[:10]], population=corpus[10:40],
                           attacks=["informia_token"], cache_dir=None, n_bootstrap=0, progress=False, require_labels=False)
    lt = result.extra["leak_threshold"]
    assert lt["source"] == "population tokens" and lt["n_texts"] == 30
    # texts are judged against the 30 population texts, which resolve no rate finer than 1/31
    assert lt["text"]["source"] == "population texts" and lt["text"]["n_texts"] == 30 and lt["text"]["rate"] == 1 / 31
    assert list(lt["text"]["flagged"]) == ["unlabelled"] and lt["text"]["flagged"]["unlabelled"][1] == 10
    # and with neither, the fixed level, said as such
    bare = memlens.audit(str(gpt2.path), [str(gpt2_ref.path)], data=[{"text": t} for t in corpus[:10]],
                         attacks=["informia_token"], cache_dir=None, n_bootstrap=0, progress=False, require_labels=False)
    assert bare.extra["leak_threshold"]["source"] == "fixed" and bare.extra["leak_threshold"]["rate"] is None
    assert bare.extra["leak_threshold"]["text"]["rate"] is None and bare.extra["leak_threshold"]["text"]["flagged"]["unlabelled"] == [0, 10]
