"""``memlens show ID``: one audited text in the terminal, tokens coloured by leakage (rich).

Audited text is untrusted here too: it never goes through rich's markup parser (only ``Text``
objects), and control characters (ESC, C1 controls, bidirectional overrides, ...) are shown as
visible ``\\x..`` / ``\\u....`` escapes, so a text cannot move the cursor, set the window title,
clear the screen or reorder what is shown.
"""
from __future__ import annotations

import os
import re
import unicodedata
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def safe_terminal_text(s: str) -> str:
    """``s`` with control and bidi-control characters replaced by visible escapes (newline and tab kept)."""
    def esc(m: re.Match) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    s = _UNSAFE.sub(esc, s)
    if any(unicodedata.category(ch) == "Cs" for ch in s):  # lone surrogates cannot be written out
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def _style(score: float | None, thr: float, scale: float) -> str:
    """Leaked: solid red; otherwise a background whose intensity follows the score (red above 0, blue below)."""
    if score is None:
        return ""
    if score > thr:
        return "bold white on rgb(185,28,28)"
    a = min(abs(score) / scale, 1.0)
    if a < 0.15:
        return ""
    if score > 0:
        g = int(255 - 150 * a)
        return f"black on rgb(255,{g},{g})"
    r = int(255 - 110 * a)
    return f"black on rgb({r},{min(255, r + 25)},255)"


def _pick(payload: dict[str, Any], attack: str | None) -> dict[str, Any] | None:
    ta = payload["token_attacks"]
    if not ta:
        return None
    if attack is None:
        return ta[0]
    for a in ta:
        if a["name"] == attack:
            return a
    from memlens.data import DataError

    raise DataError(f"no token-level scores for {attack!r}; have {', '.join(a['name'] for a in ta)}")


def show_text(results_dir: str | os.PathLike, text_id: str, threshold: float | None = None, console: Console | None = None,
              attack: str | None = None, top: int = 10) -> dict[str, Any]:
    """Print one text with each token styled by its token-level score, then its most leaked tokens.

    ``threshold``: None takes the audit's calibrated one (the level a stated share of non-member
    tokens exceed, see memlens.leakage); the fixed 1.0 for audits saved without one.
    ``attack``: the token-level attack (default informia_token, else the first one saved).
    Returns what was shown: id, n_tokens, leaked_tokens, leaked_total (in the attack's unit),
    leaked_pii_tokens, unit, attack, threshold, and at the calibrated threshold expected_by_chance, tail
    (binomial, a length-adjusted score), null_as_extreme of null_n null texts, p_value and leaking (the
    calibrated text-level flag: memlens.leakage.text_leak)."""
    from memlens.report.html import build_payload, calibrated_leak, default_threshold, iter_token_pieces, load_one, saved_colour_scale

    # this one text's rows only, and the colour scale saved by the audit (as the HTML report has it)
    saved = load_one(results_dir, str(text_id))
    calibrated = threshold is None
    if calibrated:
        threshold = default_threshold(saved.results)
    payload = build_payload(saved, threshold)
    t = payload["texts"][0]
    ta = _pick(payload, attack)
    scores = t["s"].get(ta["name"]) if ta else None
    unit = ta["unit"] if ta else ""
    scale = saved_colour_scale(results_dir, saved.results, ta["name"]) if ta else 1.0
    console = console or Console(highlight=False)

    body = Text()
    leaked: list[tuple[float, int]] = []
    for kind, i, piece in iter_token_pieces(t["text"], t["start"], t["end"]):
        piece = safe_terminal_text(piece)
        if kind == "gap":
            body.append(piece)
            continue
        v = scores[i] if scores is not None and i < len(scores) else None
        if v is not None and v > threshold:
            leaked.append((v, i))
        body.append(piece, style=(_style(v, threshold, scale) + (" underline" if t["pii"][i] >= 0 else "")).strip())

    head = Text()
    head.append(safe_terminal_text(t["id"]), style="bold")
    head.append(f"  {({1: 'member', 0: 'non-member'}).get(t['label'], 'unlabelled')}")
    if t["tier"] is not None:
        head.append(f", tier {t['tier']}" + ("x" if isinstance(t["tier"], int) else ""))
    for a, v in t["scores"].items():
        if v is not None:
            head.append(f"  {a}={v:.3f}", style="dim")
    console.print(head)
    console.print(body)
    n_pii = sum(1 for _, i in leaked if t["pii"][i] >= 0)
    bits = float(sum(v for v, _ in leaked))
    lt = payload.get("leak") or {}
    null = None
    if ta:
        summary = Text(f"{len(leaked)} of {len(t['start'])} tokens above {threshold:g} {unit} ({ta['name']}): "
                       f"{bits:.1f} {unit} leaked", style="bold")
        if payload["pii_types"] or any(p >= 0 for p in t["pii"]):
            summary.append(f", {n_pii} of them ground-truth PII", style="bold")
        console.print(summary)
        if lt.get("attack") == ta["name"] and threshold == lt.get("value") and scores is not None:
            null = calibrated_leak(saved, t["id"], t["label"], ta["name"])
            if null is not None:
                console.print(Text(_null_line(null, lt, threshold, unit)))
        elif calibrated or lt.get("attack") != ta["name"]:
            console.print(Text(f"threshold {threshold:g} {unit}: a fixed level, not calibrated on non-members", style="dim"))
        console.print(Text("red background = target predicts the token better than the reference (bold = above the "
                           "threshold), blue = worse; underlined = ground-truth PII", style="dim"))
    else:
        console.print(Text("no token-level scores in this audit (informia_token needs a causal target and a reference "
                           "model; minkpp needs a causal target)", style="dim"))
    if leaked and top > 0:
        table = Table(title=f"most leaked tokens ({min(top, len(leaked))} of {len(leaked)})", title_justify="left")
        for col in ("#", "token", f"score ({unit})", "log p target", "log p reference", "PII"):
            table.add_column(col, justify="left" if col in ("token", "PII") else "right", overflow="fold")
        for v, i in sorted(leaked, reverse=True)[:top]:
            lr = t["lp_r"][i] if t["lp_r"] else None
            table.add_row(str(i + 1), Text(safe_terminal_text(repr(t["text"][t["start"][i]:t["end"][i]]))), f"{v:.3f}",
                          "" if t["lp_t"][i] is None else f"{t['lp_t'][i]:.3f}", "" if lr is None else f"{lr:.3f}",
                          Text(payload["pii_types"][t["pii"][i]] if t["pii"][i] >= 0 else ""))
        console.print(table)
    out = {"id": t["id"], "attack": ta["name"] if ta else None, "unit": unit, "n_tokens": len(t["start"]),
           "leaked_tokens": len(leaked), "leaked_total": bits, "leaked_pii_tokens": n_pii, "threshold": threshold}
    if null is not None:
        out.update({k: null[k] for k in ("expected_by_chance", "tail", "p_value", "null_as_extreme", "null_n", "null_exact",
                                         "leaking", "above_threshold")})
    return out


def _null_line(null: dict[str, Any], lt: dict[str, Any], threshold: float, unit: str) -> str:
    """The text against the null, in words: what a non-member of its length shows by chance, and the calibrated flag."""
    if null["expected_by_chance"] is None:
        return f"threshold {threshold:g} {unit}: a fixed level (no non-members to calibrate on), so no chance rate to compare with"
    rate = f"{lt['rate'] * 100:.2g}%"
    line = (f"threshold {threshold:g} {unit} = the level {rate} of {lt['source']} exceed; a non-member text of "
            f"{null['n_tokens']} tokens has {null['expected_by_chance']:.2f} above it by chance ({null['above_threshold']:.1f} "
            f"{unit} above the threshold in all). ")
    if null["leaking"] is None:
        return line + "No calibrated text-level flag in this audit."
    text_rate = f"{lt['text_rate'] * 100:.3g}%" if lt.get("text_rate") else "the stated share"
    verdict = "LEAKING" if null["leaking"] else "not flagged as leaking"
    m = f"{'' if null.get('null_exact', True) else 'at least '}{null['null_as_extreme']}"
    return line + (f"{verdict}: {m} of {null['null_n']} {lt.get('text_source') or 'null texts'} have as many "
                   f"above it for their length (p = {null['p_value']:.2g}; flagged at {text_rate} or less)")
