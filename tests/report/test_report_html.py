"""The report's HTML without a browser: escaping, self-containment, rebuilding from disk, terminal view."""
from __future__ import annotations

import json

from rich.console import Console

from memlens.report import show_text, write_report_from_dir
from tests.report.conftest import HOSTILE


def test_report_is_self_contained_and_escaped(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "<script>window.__pwned" not in html  # the hostile text never appears as markup
    assert "http://" not in html and "https://" not in html  # no CDN, no network
    assert html.count("<script") == 2
    data = html.split('id="memlens-data">', 1)[1].split("</script>", 1)[0]
    texts = json.loads(data)["texts"]
    assert any(t["text"] == HOSTILE for t in texts)


def test_rebuild_from_saved_files(report_dir):
    (report_dir / "report.html").unlink()
    path = write_report_from_dir(report_dir)
    assert path.stat().st_size > 10_000


def test_terminal_view_counts_leaked_tokens(report_dir):
    console = Console(record=True, width=100)
    low = show_text(report_dir, "mem-1", threshold=-100.0, console=console)
    high = show_text(report_dir, "mem-1", threshold=100.0, console=console)
    assert low["leaked_tokens"] == low["n_tokens"] > 0
    assert high["leaked_tokens"] == 0
    assert "Alice Smith" in console.export_text()
