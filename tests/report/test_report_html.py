"""The report's HTML without a browser: self-containment, escaping, payload, loaders, terminal view."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import shutil
from html import unescape

import numpy as np
import pytest
from rich.console import Console

from memlens.data import DataError
from memlens.report import SavedAudit, build_payload, load_saved, safe_json, show_text, write_report, write_report_from_dir
from memlens.report._synthetic import synthetic_result
from tests.report.conftest import HOSTILE, HOSTILE2, HOSTILE_ID, HOSTILE_MODEL, HOSTILE_TYPE


def _data(html: str) -> dict:
    block = html.split('<script type="application/json" id="memlens-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(block)


def test_report_is_self_contained(synthetic_dir):
    html = (synthetic_dir / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "//cdn" not in html  # no CDN, no network
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    assert html.count("<script") == 2  # the JSON data and the page's own code
    csp = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    script_src = next(d.strip() for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "default-src 'none'" in csp and script_src.startswith("script-src 'sha256-") and "unsafe" not in script_src
    script = html.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # the page's script, and nothing else, may run
    code = re.sub(r"//[^\n]*", "", script)  # comments may name what the code must not use
    assert "innerHTML" not in code and "outerHTML" not in code and "insertAdjacentHTML" not in code and "document.write" not in code


def test_hostile_text_never_appears_as_markup(synthetic_dir):
    html = (synthetic_dir / "report.html").read_text(encoding="utf-8")
    for bad in ("<script>window.__pwned", "<img src=x", "<svg", "<!--", "</textarea>", "<b onmouseover", HOSTILE_MODEL):
        assert bad not in html
    assert "&lt;script&gt;window.__pwned=7&lt;/script&gt;" in html  # the model name, escaped by jinja2
    data = _data(html)
    texts = {t["id"]: t["text"] for t in data["texts"]}
    assert texts["evil"] == HOSTILE and texts["evil2"] == HOSTILE2 and HOSTILE_ID in texts
    assert HOSTILE_TYPE in data["pii_types"]


@pytest.mark.parametrize("s", ["</script><script>alert(1)</script>", "<!-- x -->", "a\u2028b\u2029c", "lone \udc80 surrogate", "é中😀&<>"])
def test_safe_json_round_trips_and_cannot_break_out(s):
    out = safe_json({"t": s, "n": [1.5, None]})
    assert "<" not in out and ">" not in out and "\u2028" not in out and "\u2029" not in out
    out.encode("utf-8")  # valid UTF-8 even for a lone surrogate
    assert json.loads(out) == {"t": s, "n": [1.5, None]}


def test_payload_same_from_result_and_from_saved_files(synthetic, synthetic_dir):
    a = build_payload(SavedAudit.from_result(synthetic))
    b = build_payload(load_saved(synthetic_dir))
    assert a == b
    assert [t["name"] for t in a["token_attacks"]] == ["informia_token", "minkpp"]
    assert a["token_attacks"][0]["unit"] == "bits" and a["token_attacks"][1]["unit"] == "z"
    t = next(t for t in a["texts"] if t["id"] == "t0000")
    assert len(t["start"]) == len(t["end"]) == len(t["lp_t"]) == len(t["lp_r"]) == len(t["s"]["informia_token"]) == len(t["pii"])
    assert t["label"] == 1 and t["tier"] in (1, 4, 16)


def test_slider_from_the_saved_spread_equals_the_one_from_every_text(synthetic):
    """The audit saves each token attack's spread (results.json token_scales and token_ranges) so the report does
    not read every text's scores; an output directory without it (older) gets the very same slider computed."""
    saved = SavedAudit.from_result(synthetic)
    assert set(saved.results["token_ranges"]) == {"informia_token", "minkpp"}
    with_spread = build_payload(saved)["token_attacks"]
    del saved.results["token_ranges"]
    assert build_payload(saved)["token_attacks"] == with_spread


def test_pii_types_follow_character_spans(synthetic):
    p = build_payload(SavedAudit.from_result(synthetic))
    for t in p["texts"][:5]:
        sample = next(s for s in synthetic.samples if s.id == t["id"])
        for sp in sample.meta["pii"]:
            hit = [i for i, (a, b) in enumerate(zip(t["start"], t["end"])) if a < sp["end"] and b > sp["start"]]
            assert hit and all(p["pii_types"][t["pii"][i]] == sp["type"] for i in hit)
        assert sum(1 for v in t["pii"] if v >= 0) == sum(
            1 for a, b in zip(t["start"], t["end"]) if any(a < sp["end"] and b > sp["start"] for sp in sample.meta["pii"]))


def test_metrics_table_with_unresolvable_fpr(synthetic_dir):
    p = build_payload(load_saved(synthetic_dir))
    m = next(m for m in p["metrics"] if m["attack"] == "informia")
    cells = {c["fpr"]: c for c in m["tpr"]}
    assert cells["0.1%"]["value"] is None and "non-members" in cells["0.1%"]["why"]  # 23 non-members < 1000
    assert cells["5%"]["value"] is not None and len(cells["5%"]["ci"]) == 2
    html = (synthetic_dir / "report.html").read_text(encoding="utf-8")
    assert html.count('class="na"') == len(p["metrics"]) * 2  # 0.1% and 1% for every attack
    assert "TPR at 0.1% FPR not reported" in html


def test_token_attack_fallback_and_none(tmp_path):
    only_minkpp = synthetic_result(10, 20, token_attacks=("minkpp",), with_reference=False, n_bootstrap=0)
    p = build_payload(SavedAudit.from_result(only_minkpp))
    assert [a["name"] for a in p["token_attacks"]] == ["minkpp"] and p["token_attacks"][0]["unit"] == "z"
    assert p["texts"][0]["lp_r"] is None
    none = synthetic_result(10, 20, token_attacks=(), n_bootstrap=0)
    path = write_report(none, tmp_path)
    html = path.read_text(encoding="utf-8")
    assert 'id="noTokenAttack"' in html and _data(html)["token_attacks"] == []


def test_nan_scores_and_metrics_render(tmp_path):
    r = synthetic_result(10, 20, n_bootstrap=0)
    r.token_scores["informia_token"][1][0] = float("nan")
    r.metrics["loss"].auc_ci = (float("nan"), float("inf"))
    r.save(tmp_path)  # (AuditResult.save's roc.png cannot take NaN scores: the NaN goes into scores.csv afterwards)
    r.scores.loc[0, "loss"] = float("nan")
    r.scores.to_csv(tmp_path / "scores.csv", index=False)
    (tmp_path / "manifest.json").unlink()  # the hand edit no longer matches the set's manifest, which would refuse it
    for path in (write_report_from_dir(tmp_path), write_report(r, tmp_path / "mem")):
        html = path.read_text(encoding="utf-8")
        d = _data(html)
        assert d["texts"][0]["scores"]["loss"] is None and d["texts"][1]["s"]["informia_token"][0] is None
        assert "NaN" not in html.split('id="memlens-data">', 1)[1] and 'id="rocImg"' in html


def test_unlabelled_audit_has_no_metrics_but_renders(tmp_path):
    r = synthetic_result(8, 20, n_bootstrap=0)
    for s in r.samples:
        s.label = None
    r.scores["label"] = None
    r.metrics = {}
    html = write_report(r, tmp_path).read_text(encoding="utf-8")
    assert "No membership metrics" in html and 'id="rocImg"' not in html
    assert all(t["label"] is None for t in _data(html)["texts"])


def test_rebuild_from_saved_files(report_dir):
    first = (report_dir / "report.html").read_bytes()
    (report_dir / "report.html").unlink()
    path = write_report_from_dir(report_dir)
    assert path.read_bytes() == first  # the same page whether built from memory or from disk


def test_real_audit_payload(report_dir):
    p = build_payload(load_saved(report_dir))
    assert p["token_attacks"][0]["name"] == "informia_token" and p["token_attacks"][0]["unit"] == "bits"
    t = next(t for t in p["texts"] if t["id"] == "mem-0")
    assert t["lp_r"] is not None and all(x is not None for x in t["lp_t"])
    phone = [i for i, v in enumerate(t["pii"]) if v >= 0]
    assert phone and "".join(t["text"][t["start"][i]:t["end"][i]] for i in phone).strip().startswith("555")
    evil = next(t for t in p["texts"] if t["id"] == "evil")
    assert evil["text"] == HOSTILE


def test_missing_texts_jsonl_rebuilds_texts_from_tokens(synthetic_dir, tmp_path):
    for f in ("results.json", "scores.csv", "token_scores.parquet"):
        shutil.copy(synthetic_dir / f, tmp_path / f)
    saved = load_saved(tmp_path)
    assert any("texts.jsonl is missing" in n for n in saved.notes)
    p = build_payload(saved)
    t = next(t for t in p["texts"] if t["id"] == "t0001")
    orig = next(t for t in build_payload(load_saved(synthetic_dir))["texts"] if t["id"] == "t0001")
    assert t["text"] == orig["text"] and t["start"] == orig["start"]  # whitespace tokens cover the text
    assert all(v == -1 for v in t["pii"]) and p["pii_types"] == []
    assert "texts.jsonl is missing" in write_report_from_dir(tmp_path).read_text(encoding="utf-8")


def test_not_an_audit_dir(tmp_path):
    with pytest.raises(DataError, match="lacks results.json, scores.csv"):
        write_report_from_dir(tmp_path)


# ---- terminal view ----------------------------------------------------------------------------


def _console():
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, color_system="truecolor", width=120), buf


def test_terminal_view_counts_leaked_tokens(synthetic_dir):
    con, buf = _console()
    low = show_text(synthetic_dir, "t0000", threshold=-100.0, console=con)
    high = show_text(synthetic_dir, "t0000", threshold=100.0, console=con)
    mid = show_text(synthetic_dir, "t0000", threshold=1.0, console=con)
    assert low["leaked_tokens"] == low["n_tokens"] > 0 and high["leaked_tokens"] == 0
    assert low["unit"] == "bits" and low["attack"] == "informia_token"
    p = build_payload(load_saved(synthetic_dir))
    s = next(t for t in p["texts"] if t["id"] == "t0000")["s"]["informia_token"]
    assert mid["leaked_tokens"] == sum(v > 1.0 for v in s) and math.isclose(mid["leaked_total"], sum(v for v in s if v > 1.0))
    assert mid["leaked_pii_tokens"] > 0  # members' PII tokens score high in the synthetic audit
    out = buf.getvalue()
    assert "most leaked tokens" in out and "phone" in out
    z = show_text(synthetic_dir, "t0000", threshold=0.5, console=con, attack="minkpp")
    assert z["unit"] == "z"
    with pytest.raises(DataError, match="no text with id"):
        show_text(synthetic_dir, "nope", console=con)
    with pytest.raises(DataError, match="no token-level scores for 'loss'"):
        show_text(synthetic_dir, "t0000", console=con, attack="loss")


def test_terminal_view_neutralises_control_characters_and_markup(tmp_path):
    evil = "ok \x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202eabc\x9b2J [bold]not markup[/bold] [/oops]"
    r = synthetic_result(4, 10, extra_texts=[("[red]id[/red]", evil, 0)], n_bootstrap=0)
    r.save(tmp_path)
    con, buf = _console()
    show_text(tmp_path, "[red]id[/red]", threshold=-100, console=con)
    out = buf.getvalue()
    for bad in ("\x1b]0;", "\x1b[2J", "\x07", "\u202e", "\x9b"):
        assert bad not in out
    assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out
    plain = re.sub("\x1b\\[[0-9;]*m", "", out)  # rich's own colour codes only
    assert "[red]id[/red]" in plain and "[bold]not markup[/bold] [/oops]" in plain


def test_terminal_view_real_audit(report_dir):
    con, buf = _console()
    r = show_text(report_dir, "mem-1", threshold=-100.0, console=con)
    assert r["leaked_tokens"] == r["n_tokens"] > 0
    assert "Alice Smith" in re.sub("\x1b\\[[0-9;]*m", "", buf.getvalue())
    con, buf = _console()
    show_text(report_dir, "evil", console=con)
    assert "<script>window.__pwned=1</script>" in re.sub("\x1b\\[[0-9;]*m", "", buf.getvalue())


def test_payload_is_compact(synthetic):
    p = build_payload(SavedAudit.from_result(synthetic))
    lp = [v for t in p["texts"] for v in t["lp_t"]]
    assert all(v is None or round(v, 3) == v for v in lp)
    assert isinstance(p["texts"][0]["start"][0], int) and not isinstance(p["texts"][0]["start"][0], np.integer)
