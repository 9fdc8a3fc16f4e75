"""The HTML report in headless Chromium, opened from a file:// URL: metrics table, texts list, token
view, hover, threshold slider, leak summary, and hostile text that stays inert text.

Needs Debian's chromium (``apt-get install -y chromium``) and Playwright for Python
(``pip install playwright``; never ``playwright install``). Skipped when either is missing.
Screenshots go to the test's tmp dir, and also to $MEMLENS_ARTIFACTS when that is set.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.report.conftest import HOSTILE, HOSTILE2, HOSTILE_ID, HOSTILE_MODEL, HOSTILE_TYPE, make_synthetic

CHROMIUM = os.environ.get("MEMLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed (pip install playwright)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed (apt-get install -y chromium)"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Opened:
    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']")
        self.page.wait_for_selector("#tokens .tok")

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file://", "data:"))]


@pytest.fixture(scope="module")
def synth(browser, synthetic_dir):
    o = Opened(browser, synthetic_dir / "report.html")
    yield o
    o.page.close()


def _shot(page, tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp("artifacts") / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MEMLENS_ARTIFACTS"):
        Path(os.environ["MEMLENS_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["MEMLENS_ARTIFACTS"]) / name)
    print(f"screenshot: {path}")
    return path


def _select_text(page, tid: str) -> None:
    page.fill("#filter", "")
    exact = re.compile("^" + re.escape(tid) + "$")
    page.locator("#textsTable tbody tr").filter(has=page.locator("td:first-child", has_text=exact)).first.click()
    assert page.locator("#tvTitle").inner_text() == tid


def test_loads_offline_without_errors(synth):
    assert synth.foreign_requests() == []
    assert synth.errors == []
    assert synth.page.evaluate("document.getElementById('rocImg').naturalWidth") > 100
    assert synth.page.evaluate("document.getElementById('histImg').naturalWidth") > 100


def test_metrics_table(synth):
    page = synth.page
    rows = page.locator("#metrics tbody tr")
    names = [rows.nth(i).get_attribute("data-attack") for i in range(rows.count())]
    assert names == ["loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token"]
    for n in names:
        assert 0.0 <= float(page.locator(f'#metrics tr[data-attack="{n}"] td.auc').inner_text()) <= 1.0
    na = page.locator('#metrics tr[data-attack="informia"] td[data-fpr="0.1%"] .na')
    assert na.count() == 1 and "non-members" in na.get_attribute("title")
    five = page.locator('#metrics tr[data-attack="informia"] td[data-fpr="5%"]').inner_text()
    assert float(five.split()[0]) >= 0 and "(" in five  # the value and its interval
    assert "TPR at 0.1% FPR not reported" in page.locator("#notes").inner_text()


def test_texts_sort_and_filter(synth):
    page = synth.page
    n_all = page.locator("#textsTable tbody tr").count()
    assert n_all == 43
    page.select_option("#attackSel", "loss")

    def scores():
        col = 4  # id, label, tier, score
        return [float(x) for x in page.locator(f"#textsTable tbody td:nth-child({col})").all_inner_texts()]

    s = scores()
    assert s == sorted(s, reverse=True)
    page.click('#textsTable th[data-k="score"]')
    s = scores()
    assert s == sorted(s)
    page.select_option("#labelSel", "1")
    assert page.locator("#textsTable tbody tr").count() == 20
    assert set(page.locator("#textsTable tbody td:nth-child(2)").all_inner_texts()) == {"member"}
    page.select_option("#labelSel", "")
    page.fill("#filter", "t001")
    assert page.locator("#textsTable tbody tr").count() == 10
    page.fill("#filter", "")
    assert page.locator("#textsTable tbody tr").count() == n_all


def test_token_view_hover_shows_numbers(synth, synthetic):
    page = synth.page
    _select_text(page, "t0003")
    toks = page.locator("#tokens .tok")
    sample = next(s for s in synthetic.samples if s.id == "t0003")
    i = next(i for i, s in enumerate(synthetic.samples) if s.id == "t0003")
    assert toks.count() == len(synthetic.target_stats[i])
    assert page.locator("#tokens").inner_text() == sample.text
    pii = page.locator("#tokens .tok.pii")
    assert pii.count() > 0
    k = int(pii.first.get_attribute("data-i"))
    pii.first.hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    text = tip.inner_text()
    lp_t = float(synthetic.target_stats[i].logprob[k])
    lp_r = float(synthetic.reference_logprobs[i][k])
    s = float(synthetic.token_scores["informia_token"][i][k])
    assert f"target {lp_t:.3f}" in text and f"reference {lp_r:.3f}" in text and f"{s:.3f} bits" in text
    assert "PII        phone" in text or "PII        email" in text
    page.mouse.move(5, 5)
    assert not tip.is_visible()


def _set_threshold(page, value: float) -> None:
    page.evaluate("v => { const s = document.getElementById('thr'); s.value = v; s.dispatchEvent(new Event('input')); }", str(value))
    page.wait_for_selector(f"body[data-thr='{value:g}']")  # the tables are redrawn on the next animation frame


def test_slider_changes_marked_tokens_and_summary(synth, synthetic, tmp_path_factory):
    page = synth.page
    _select_text(page, "t0003")
    lo, hi = float(page.get_attribute("#thr", "min")), float(page.get_attribute("#thr", "max"))
    i = next(i for i, s in enumerate(synthetic.samples) if s.id == "t0003")
    scores = synthetic.token_scores["informia_token"][i]
    counts = {}
    for thr in (lo, 1.0, 2.5, hi):
        _set_threshold(page, thr)
        counts[thr] = page.locator("#tokens .tok.leak").count()
        assert counts[thr] == int((scores.round(3) > thr).sum())
        assert page.locator("#summary").inner_text().startswith(f"{counts[thr]} of {len(scores)} tokens above {thr:g} bits")
    assert counts[lo] > counts[1.0] > counts[hi] == 0
    # the leak summary follows the slider
    _set_threshold(page, 1.0)
    leaked_phone_1 = int(page.locator("#byType tbody tr", has_text="phone").locator("td").nth(2).inner_text())
    _set_threshold(page, 2.5)
    leaked_phone_2 = int(page.locator("#byType tbody tr", has_text="phone").locator("td").nth(2).inner_text())
    assert leaked_phone_1 > leaked_phone_2 > 0
    assert page.locator("#topTexts tbody tr").count() > 0
    page.locator("#topTexts tbody tr").first.click()
    assert page.locator("#tvTitle").inner_text() == page.locator("#topTexts tbody tr td").first.inner_text()
    _set_threshold(page, 1.0)
    _select_text(page, "t0003")
    page.locator("#tokens .tok.pii").first.hover()
    assert _shot(page, tmp_path_factory, "report-synthetic.png").stat().st_size > 20_000


def test_token_attack_switch(synth):
    page = synth.page
    _select_text(page, "t0003")
    page.select_option("#tokAttackSel", "minkpp")
    assert page.locator("#thrVal + .unit").inner_text() == "z"
    page.locator("#tokens .tok").nth(3).hover()
    tip = page.locator("#tip").inner_text()
    assert "minkpp" in tip and ("above the threshold" in tip or "below the threshold" in tip)  # the switched attack's own test
    page.select_option("#tokAttackSel", "informia_token")
    assert page.locator("#thrVal + .unit").inner_text() == "bits"


def test_hostile_text_is_inert(synth):
    page = synth.page
    for tid, text in (("evil", HOSTILE), ("evil2", HOSTILE2)):
        _select_text(page, tid)
        assert page.locator("#tokens").inner_text() == text  # shown as literal text
        assert page.locator("#tokens *:not(span.tok)").count() == 0
        page.locator("#tokens .tok").first.hover()
    _select_text(page, HOSTILE_ID)
    page.mouse.move(5, 5)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("script").count() == 2 and page.locator("img").count() == 2  # the page's own, nothing added
    assert HOSTILE_MODEL in page.locator("#models").inner_text()
    assert HOSTILE_TYPE in page.locator("#byType").inner_text()
    assert synth.errors == []


def test_csp_blocks_injected_markup(synth):
    """Defence in depth: even markup injected by a future bug could not run script or load anything."""
    page = synth.page
    page.evaluate("""() => {
        document.body.insertAdjacentHTML('beforeend', '<img id=inj src=x onerror="window.__csp=1">');
        const s = document.createElement('script'); s.textContent = 'window.__csp = 2'; document.body.appendChild(s);
    }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__csp") is None
    assert synth.foreign_requests() == []


def test_real_audit_report(browser, report_dir, tmp_path_factory):
    o = Opened(browser, report_dir / "report.html")
    page = o.page
    try:
        assert "informia_token" in [page.locator("#metrics tbody tr").nth(i).get_attribute("data-attack")
                                    for i in range(page.locator("#metrics tbody tr").count())]
        _select_text(page, "mem-3")
        assert page.locator("#tokens").inner_text() == "Alice Smith, phone 555-0103, lives at 3 Elm Street."
        page.locator("#tokens .tok.pii").first.hover()
        tip = page.locator("#tip").inner_text()
        assert "bits" in tip and "reference" in tip and "PII        phone" in tip
        _select_text(page, "evil")
        assert page.locator("#tokens").inner_text() == HOSTILE
        assert page.evaluate("window.__pwned") is None
        assert o.errors == [] and o.foreign_requests() == []
        _shot(page, tmp_path_factory, "report-tiny-audit.png")
    finally:
        page.close()


def test_long_list_is_drawn_in_pages_and_follows_the_slider(browser, tmp_path):
    from memlens.report import write_report
    from memlens.report._synthetic import synthetic_result

    path = write_report(synthetic_result(450, 12, n_bootstrap=0), tmp_path)
    o = Opened(browser, path)
    page = o.page
    try:
        rows = page.locator("#textsTable tbody tr")
        assert rows.count() == 200 and "450 of 450 texts (first 200 shown)" in page.locator("#textsCount").inner_text()
        page.click("#moreRows")
        assert rows.count() == 400
        page.click("#allRows")
        assert rows.count() == 450 and not page.locator("#moreRows").is_visible()
        leaked = "#textsTable tbody td:nth-child(5)"  # id, label, tier, score, leaked tokens
        _set_threshold(page, float(page.get_attribute("#thr", "min")))
        low = sum(int(x) for x in page.locator(leaked).all_inner_texts())
        _set_threshold(page, float(page.get_attribute("#thr", "max")))
        high = [int(x) for x in page.locator(leaked).all_inner_texts()]
        assert low > sum(high)
        page.check("#leakOnly")
        assert rows.count() == sum(1 for x in high if x > 0) < 450
        assert o.errors == []
    finally:
        page.close()


def test_texts_outside_the_token_view_selection(browser, tmp_path):
    from memlens.report import write_report
    from memlens.report._synthetic import synthetic_result

    path = write_report(synthetic_result(60, 20, n_bootstrap=0), tmp_path, report_texts=10)
    o = Opened(browser, path)
    page = o.page
    try:
        rows = page.locator("#textsTable tbody tr")
        assert "60 of 60 texts" in page.locator("#textsCount").inner_text()  # every text listed, with its score
        assert "10 of 60 texts" in page.locator("#selectionNote").inner_text()
        notv = rows.filter(has_text="no token view")
        assert notv.count() == 50
        assert all(s.strip() for s in notv.locator("td:nth-child(4)").all_inner_texts())  # the score is shown
        notv.first.click()
        assert page.locator("#tokens .tok").count() == 0
        assert "memlens show" in page.locator("#tokens .notv").inner_text()
        page.check("#tvOnly")
        assert rows.count() == 10 and rows.filter(has_text="no token view").count() == 0
        rows.first.click()
        assert page.locator("#tokens .tok").count() > 0 and "token-view selection" in page.locator("#tvMeta").inner_text()
        assert o.errors == []
    finally:
        page.close()


def _blind_report(tmp_path, members, nonmembers) -> Path:
    """The synthetic audit with the blind baseline of the given texts attached (as memlens.audit does)."""
    from memlens.blind import blind_baseline
    from memlens.report import write_report
    from tests.report.conftest import make_synthetic

    result = make_synthetic()
    b = blind_baseline([r["text"] for r in members + nonmembers], [1] * len(members) + [0] * len(nonmembers), n_bootstrap=200)
    result.extra["blind"] = b.to_dict()
    if b.warning:
        result.notes.insert(0, b.warning)
    write_report(result, tmp_path)
    return tmp_path / "report.html"


def test_blind_banner_for_a_shifted_pair_and_none_for_the_testbed(browser, tmp_path):
    from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
    from memlens.testbed.shifted import shifted_pair

    shifted = Opened(browser, _blind_report(tmp_path / "shifted", *shifted_pair(24)))
    try:
        page = shifted.page
        banner = page.locator("#blindBanner")
        assert banner.is_visible() and "banner differ" in banner.get_attribute("class")
        assert "members and non-members differ without the model" in banner.inner_text()
        assert "cannot be read as memorization" in banner.inner_text()
        box = banner.bounding_box()
        assert box["y"] < page.locator("#overview").bounding_box()["y"]  # above everything else
        row = page.locator("#blindRow")
        assert row.locator("td").first.inner_text() == "blind (model-free)" and float(row.locator("td.auc").inner_text()) >= 0.9
        assert shifted.errors == []
    finally:
        shifted.page.close()
    tb = build_testbed(tmp_path / "tb", TestbedConfig.quick())
    same = Opened(browser, _blind_report(tmp_path / "same", read_jsonl(tb.members), read_jsonl(tb.nonmembers)))
    try:
        assert same.page.locator("#blindBanner").count() == 0
        assert abs(float(same.page.locator("#blindRow td.auc").inner_text()) - 0.5) < 0.1
        assert same.errors == []
    finally:
        same.page.close()


def test_summary_says_the_calibrated_text_flag(browser, tmp_path):
    """At the default (calibrated) threshold a text's summary says whether it is flagged as leaking, against
    how many null texts (a non-member against the other non-members); moving the slider drops that."""
    import numpy as np

    from memlens.audit import _calibrate_leaks
    from memlens.leakage import flag_texts
    from memlens.report import write_report

    result = make_synthetic()
    _calibrate_leaks(result, None)
    lt = result.extra["leak_threshold"]
    tn = lt["text"]
    assert tn["source"] == "non-member texts" and tn["rate"] is not None
    ids, labels = [s.id for s in result.samples], [s.label for s in result.samples]
    toks = [np.asarray(t, dtype=np.float32).astype(float) for t in result.token_scores["informia_token"]]
    flags = flag_texts(toks, ids, labels, lt["value"], lt["rate"], tn)
    member = next(i for i, (f, y) in enumerate(zip(flags, labels)) if f and y == 1)
    non = next(i for i, (f, y) in enumerate(zip(flags, labels)) if not f and y == 0 and ids[i].startswith("t"))
    result.save(tmp_path)
    write_report(result, tmp_path)
    o = Opened(browser, tmp_path / "report.html")
    try:
        page = o.page
        assert "a text is flagged as leaking when at most" in page.locator("#tokenview").inner_text()
        _select_text(page, ids[member])
        assert f"; LEAKING: only 0 of {tn['n_texts']} non-member texts have as many above it" in page.locator("#summary").inner_text()
        _select_text(page, ids[non])
        said = page.locator("#summary").inner_text()
        assert "; not flagged as leaking: " in said and f" of {tn['n_texts'] - 1} non-member texts have as many" in said
        _set_threshold(page, float(page.get_attribute("#thr", "min")))
        assert "leaking" not in page.locator("#summary").inner_text()
        assert o.errors == []
    finally:
        o.page.close()
