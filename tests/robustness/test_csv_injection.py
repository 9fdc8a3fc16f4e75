"""Issue 12, item 12: ids that a spreadsheet would run as formulas are quoted in scores.csv (OWASP: a
leading single quote), and reading scores.csv back (``memlens report``) gives the original ids."""
from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from memlens.audit import audit
from memlens.cli import app
from memlens.data import spreadsheet_escape, spreadsheet_unescape
from memlens.report.html import load_saved

HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-3", "@SUM(A1)", "\tcmd", "\rcr", "'quoted", "plain"]


@pytest.mark.parametrize("value", HOSTILE + ["", "''", "a=b"])
def test_escape_round_trips(value):
    assert spreadsheet_unescape(spreadsheet_escape(value)) == value
    assert not str(spreadsheet_escape(value)).startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.fixture(scope="module")
def saved(gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("csv") / "out"
    members = [{"id": i, "text": f"Amber stone number {n} by the river.", "tier": "=tier" if n == 0 else "t"}
               for n, i in enumerate(HOSTILE[:4])]
    nonmembers = [{"id": i, "text": f"Copper harbor lantern {n}."} for n, i in enumerate(HOSTILE[4:])]
    r = audit(gpt2.model, members=members, nonmembers=nonmembers, tokenizer=gpt2.tokenizer, attacks="loss",
              n_bootstrap=10, progress=False, cache_dir=None)
    r.save(out)
    return out, {m["id"]: m["text"] for m in members + nonmembers}


def test_scores_csv_cells_are_quoted_for_spreadsheets(saved):
    out, _ = saved
    with open(out / "scores.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows]
    assert ids == [("'" + i if i[0] in "=+-@\t\r'" else i) for i in HOSTILE]
    assert rows[0]["tier"] == "'=tier"
    for r in rows:
        assert not r["id"].startswith(("=", "+", "-", "@", "\t", "\r"))


def test_report_reads_the_ids_back_and_maps_them_to_their_texts(saved):
    out, texts = saved
    s = load_saved(out)
    assert [row["id"] for row in s.scores] == HOSTILE
    assert s.scores[0]["tier"] == "=tier"
    for row in s.scores:
        assert s.texts[row["id"]]["text"] == texts[row["id"]]
        assert row["id"] in s.tokens


def test_memlens_report_builds_on_the_quoted_scores(saved):
    out, texts = saved
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Copper harbor lantern 3." in html  # the text of the id "'quoted" is found under its own id
