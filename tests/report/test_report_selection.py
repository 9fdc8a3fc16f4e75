"""The report at any size: every text keeps its scores, token-level data only for a bounded, stated selection."""
from __future__ import annotations

import json

import numpy as np
import pytest

from memlens.report import SavedAudit, build_payload, load_saved, write_report, write_report_from_dir
from memlens.report._synthetic import synthetic_result
from memlens.report.html import select_token_texts


def _data(html: str) -> dict:
    return json.loads(html.split('<script type="application/json" id="memlens-data">', 1)[1].split("</script>", 1)[0])


@pytest.fixture(scope="module")
def audit():
    return synthetic_result(60, 30, n_bootstrap=0)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, audit):
    out = tmp_path_factory.mktemp("sel")
    audit.save(out)
    write_report(audit, out, report_texts=10)
    return out


def test_selection_is_bounded_and_made_of_the_stated_groups(audit):
    p = build_payload(SavedAudit.from_result(audit), report_texts=10)
    sel = p["selection"]
    assert sel["n"] == len(p["texts"]) == 10 and sel["n_texts"] == p["n_texts"] == 60 and not sel["all"]
    assert sum(sel["groups"].values()) == 10 and set(sel["groups"]) <= {"member-like", "leak", "non-member sample"}
    # every text exactly once: with token data or column-wise in "rest"
    ids = [t["id"] for t in p["texts"]] + p["rest"]["id"]
    assert sorted(ids) == sorted(str(s.id) for s in audit.samples)
    # member-like: the 4 highest scores of the attack with the best AUC
    best = max(audit.metrics, key=lambda a: audit.metrics[a].auc)
    assert sel["attack"] == best
    top4 = audit.scores.sort_values(best, ascending=False, kind="stable")["id"].head(4).tolist()
    assert {t["id"] for t in p["texts"] if t["why"] == "member-like"} == set(top4)  # the page keeps the audit's order
    # leaks: the texts with the largest sum of informia_token scores above the threshold, outside those 4
    leak = {s.id: float(np.sum(v[v > 1.0])) for s, v in zip(audit.samples, audit.token_scores["informia_token"])}
    want = [i for i in sorted(leak, key=lambda i: -leak[i]) if i not in top4][:4]
    assert {t["id"] for t in p["texts"] if t["why"] == "leak"} == set(want) and all(leak[i] > 0 for i in want)
    assert all(t["label"] == 0 for t in p["texts"] if t["why"] == "non-member sample")
    assert sel["groups"] == {"member-like": 4, "leak": 4, "non-member sample": 2}


def test_a_text_outside_the_selection_keeps_its_scores_but_no_token_data(audit, saved_dir):
    html = (saved_dir / "report.html").read_text(encoding="utf-8")
    p = _data(html)
    rest = p["rest"]
    tid = rest["id"][0]
    sample = next(s for s in audit.samples if str(s.id) == tid)
    row = audit.scores[audit.scores["id"] == tid].iloc[0]
    for a in audit.metrics:
        assert rest["scores"][a][0] == pytest.approx(round(float(row[a]), 4))
    assert rest["label"][0] == sample.label
    assert tid not in {t["id"] for t in p["texts"]}
    # its text (with its unique fake e-mail address) is nowhere in the page; a selected text's is
    email = next(sp["value"] for sp in sample.meta["pii"] if sp["type"] == "email")
    assert email not in html and sample.text not in html
    chosen = next(s for s in audit.samples if str(s.id) == p["texts"][0]["id"])
    assert next(sp["value"] for sp in chosen.meta["pii"] if sp["type"] == "email") in html
    # the page says which texts have token views and how to see the others
    assert 'id="selectionNote"' in html and "<b>10</b> of 60 texts" in html and "memlens show" in html


def test_selection_from_saved_files_equals_from_memory(audit, saved_dir):
    assert build_payload(load_saved(saved_dir), report_texts=10) == build_payload(SavedAudit.from_result(audit), report_texts=10)
    out = write_report_from_dir(saved_dir, out=saved_dir / "again.html", report_texts=10)
    assert _data(out.read_text(encoding="utf-8"))["selection"]["n"] == 10


def test_everything_fits_no_selection_note(audit, tmp_path):
    p = build_payload(SavedAudit.from_result(audit), report_texts=60)
    assert p["selection"]["all"] and len(p["texts"]) == 60 and p["rest"]["id"] == []
    html = write_report(audit, tmp_path, report_texts=500).read_text(encoding="utf-8")
    assert 'id="selectionNote"' not in html


def test_unlabelled_or_no_token_scores_fill_from_member_like():
    res = synthetic_result(30, 10, n_bootstrap=0, token_attacks=())
    saved = SavedAudit.from_result(res)
    chosen = select_token_texts(saved, saved.scores, 7, attack="loss", token_attack=None, threshold=1.0)
    assert len(chosen) == 7 and set(chosen.values()) == {"member-like", "non-member sample"}
    unlabelled = [{**r, "label": None} for r in saved.scores]
    chosen = select_token_texts(saved, unlabelled, 7, attack="loss", token_attack=None, threshold=1.0)
    assert list(chosen.values()) == ["member-like"] * 7
    assert select_token_texts(saved, saved.scores, 0, attack="loss", token_attack=None, threshold=1.0) == {}
    with pytest.raises(ValueError, match="report_texts"):
        select_token_texts(saved, saved.scores, -1, attack="loss", token_attack=None, threshold=1.0)


def test_interval_methods_are_stated_in_the_metrics_table(tmp_path):
    res = synthetic_result(48, 10, n_bootstrap=50)
    labels = res.scores["label"].to_numpy()
    res.scores["loss"] = labels * 100.0 + np.arange(len(labels))  # perfect separation: the bootstrap collapses
    from memlens.metrics import CI_AUC_SCORE, CI_CLOPPER_PEARSON, evaluate

    res.metrics["loss"] = evaluate(labels, res.scores["loss"].to_numpy(), n_bootstrap=50)
    html = write_report(res, tmp_path).read_text(encoding="utf-8")
    table = html.split('id="ciMethods"', 1)[1].split("</p>", 1)[0]
    assert "percentile bootstrap" in table and CI_AUC_SCORE in table and CI_CLOPPER_PEARSON in table
    row = html.split('data-attack="loss"', 1)[1].split("</tr>", 1)[0]
    assert f'title="{CI_AUC_SCORE}"' in row
    other = html.split('data-attack="zlib"', 1)[1].split("</tr>", 1)[0]
    assert "&dagger;" not in other and "\u2020" not in other
