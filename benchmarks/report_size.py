"""Size and open time of the HTML report, for a 1,000-text audit or one of any size (--texts 100000).

Builds a synthetic AuditResult (by default 1,000 texts of 100-200 tokens, half members, 8 attacks, token
scores for informia_token and minkpp, reference log-probabilities, PII spans), saves it as the CLI
does, writes report.html (from memory, and again from the saved files), prints its size, then opens
it from a file:// URL in headless Chromium (Debian's /usr/bin/chromium through Playwright, a fresh
page each run) and prints the time until the page is rendered and interactive (texts list, leak
summary and token view drawn), and the time one threshold-slider step takes.

The page keeps every text's scores but token-level data for ``--report-texts`` texts only (default
200, memlens' default), so its size grows by ~80 bytes a text beyond those.

Limits (exit status 1 when exceeded): report.html < 25 MB, open < 3 s.

    python benchmarks/report_size.py [--texts 1000] [--min-tokens 100] [--max-tokens 200] [--runs 5] [--report-texts 200]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from memlens.report import show_text, write_report, write_report_from_dir
from memlens.report._synthetic import synthetic_result
from memlens.report.html import DEFAULT_REPORT_TEXTS

SIZE_LIMIT_MB = 25.0
OPEN_LIMIT_S = 3.0
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def open_times(path: Path, runs: int, chromium: str) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"wall_s": [], "in_page_s": [], "slider_ms": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_selector("body[data-ready='1'] #tokens .tok")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
            out["wall_s"].append(time.perf_counter() - t0)
            out["in_page_s"].append(page.evaluate("window.memlensReadyMs") / 1000)
            out["slider_ms"].append(page.evaluate("""() => {
                const s = document.getElementById('thr'), t0 = performance.now();
                s.value = String(Number(s.value) + 1); s.dispatchEvent(new Event('input'));
                return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now() - t0))));
            }"""))
            page.close()
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--min-tokens", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--report-texts", type=int, default=DEFAULT_REPORT_TEXTS, help="texts with token-level data in the page")
    ap.add_argument("--chromium", default=os.environ.get("MEMLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--keep", type=Path, help="copy report.html here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args()
    t0 = time.perf_counter()
    result = synthetic_result(a.texts, (a.min_tokens, a.max_tokens), n_bootstrap=100)
    n_tok = sum(len(s) for s in result.target_stats)
    synth_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        result.save(d)
        t0 = time.perf_counter()
        write_report_from_dir(d, report_texts=a.report_texts)
        rebuild_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        path = write_report(result, d, report_texts=a.report_texts)
        build_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        # `memlens show` of the last text (outside the token-view selection once there are more texts than it holds)
        t0 = time.perf_counter()
        show_text(d, result.samples[-1].id, console=Console(file=io.StringIO()))
        show_s = time.perf_counter() - t0
        if a.keep:
            shutil.copy(path, a.keep)
        print(f"audit: {len(result.samples)} texts, {n_tok} tokens ({n_tok / len(result.samples):.0f} per text), "
              f"{len(result.metrics)} attacks, 2 token-level (synthetic, built in {synth_s:.1f} s)")
        print(f"report.html: {size_mb:.2f} MB (limit {SIZE_LIMIT_MB:g} MB), token view for {min(a.report_texts, a.texts)} texts; "
              f"written in {build_s:.1f} s from memory, {rebuild_s:.1f} s from the saved files; memlens show of one text {show_s:.1f} s")
        ok = size_mb < SIZE_LIMIT_MB
        res = {"texts": len(result.samples), "report_texts": a.report_texts, "tokens": n_tok, "size_mb": round(size_mb, 3),
               "build_s": round(build_s, 2), "rebuild_s": round(rebuild_s, 2),
               "show_s": round(show_s, 2)}
        if not os.path.exists(a.chromium):
            print(f"open time: skipped, no Chromium at {a.chromium}")
        else:
            try:
                t = open_times(path, a.runs, a.chromium)
            except ImportError:
                print("open time: skipped, Playwright is not installed")
            else:
                med = statistics.median(t["wall_s"])
                print(f"open until rendered and interactive, headless Chromium (wall, {a.runs} runs): "
                      f"{', '.join(f'{x:.2f}' for x in t['wall_s'])} s; median {med:.2f} s (limit {OPEN_LIMIT_S:g} s)")
                print(f"  in-page (navigation start to ready): median {statistics.median(t['in_page_s']):.2f} s; "
                      f"one slider step: median {statistics.median(t['slider_ms']):.0f} ms")
                ok = ok and max(t["wall_s"]) < OPEN_LIMIT_S
                res.update({k: [round(x, 3) for x in v] for k, v in t.items()})
        if a.json:
            a.json.write_text(json.dumps(res, indent=2))
    print("OK" if ok else "LIMIT EXCEEDED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
