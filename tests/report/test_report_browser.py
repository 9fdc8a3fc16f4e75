"""The HTML report in headless Chromium: metrics, token view, hover, slider, and inert <script> text.

Needs Debian's chromium (/usr/bin/chromium) and Playwright for Python; .ci/run installs both.
Skipped when either is missing."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from tests.report.conftest import HOSTILE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed"),
    pytest.mark.skipif(not shutil.os.path.exists(CHROMIUM), reason="chromium not installed"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def page(report_dir):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1600})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto((report_dir / "report.html").as_uri())
        pg.wait_for_selector("#tokens .tok")
        pg.errors = errors
        yield pg
        browser.close()


def test_metrics_table_renders(page):
    rows = page.locator("#metrics tbody tr")
    assert rows.count() >= 3
    names = [rows.nth(i).get_attribute("data-attack") for i in range(rows.count())]
    assert "informia_token" in names and "loss" in names
    auc = float(page.locator('#metrics tr[data-attack="loss"] td').nth(1).inner_text())
    assert 0.0 <= auc <= 1.0
    assert "n/a" in page.locator("#metrics").inner_text()  # too few non-members for TPR@0.1%
    assert not page.errors


def test_token_view_hover_and_slider(page, report_dir, tmp_path_factory):
    page.locator("#textsTable tbody tr", has_text="mem-3").first.click()
    assert page.locator("#tvTitle").inner_text().startswith("mem-3")
    toks = page.locator("#tokens .tok")
    assert toks.count() > 5
    toks.nth(2).hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    text = tip.inner_text()
    assert "log p" in text and "target" in text and "reference" in text and "bits" in text
    # the slider decides which tokens are marked as leaked
    page.locator("#thr").fill("-2")
    low = page.locator("#tokens .tok.leak").count()
    page.locator("#thr").fill("10")
    high = page.locator("#tokens .tok.leak").count()
    assert low > high
    assert "tokens above 10" in page.locator("#summary").inner_text()
    shot = tmp_path_factory.mktemp("artifacts") / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_script_text_is_inert(page):
    page.locator("#textsTable tbody tr", has_text="evil").first.click()
    assert page.evaluate("window.__pwned === undefined")
    assert "<script>window.__pwned=1</script>" in page.locator("#tokens").inner_text()
    assert page.locator("#tokens script, #tokens img").count() == 0
    assert page.locator("body script").count() == 2  # only the report's own data and code
    assert not page.errors
