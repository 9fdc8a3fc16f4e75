"""``memlens show ID``: one audited text in the terminal, tokens coloured by leakage (rich)."""
from __future__ import annotations

import os

from rich.console import Console
from rich.text import Text


def _style(score: float | None, thr: float) -> str:
    if score is None:
        return ""
    if score > thr:
        return "bold white on red3"
    if score > thr / 2:
        return "black on light_salmon1"
    if score < -thr:
        return "grey50"
    return ""


def show_text(out_dir: str | os.PathLike, text_id: str, threshold: float = 1.0, console: Console | None = None) -> dict:
    """Print the text with each token styled by its token-level score; returns the numbers shown."""
    from memlens.data import DataError
    from memlens.report.html import build_payload, load_saved

    payload = build_payload(load_saved(out_dir))
    match = [t for t in payload["texts"] if t["id"] == str(text_id)]
    if not match:
        raise DataError(f"no text with id {text_id!r} in {out_dir}")
    t = match[0]
    console = console or Console()
    out = Text()
    pos, leaked, bits = 0, 0, 0.0
    for i, (s, e) in enumerate(zip(t["start"], t["end"])):
        if s > pos:
            out.append(t["text"][pos:s])
        score = t["s"][i] if t["s"] else None
        if score is not None and score > threshold:
            leaked += 1
            bits += score
        out.append(t["text"][max(s, pos):e], style=_style(score, threshold) + (" underline" if t["pii"][i] >= 0 else ""))
        pos = max(pos, e)
    out.append(t["text"][pos:])
    label = {1: "member", 0: "non-member"}.get(t["label"], "unlabelled")
    console.print(f"[bold]{t['id']}[/] ({label}{', ' + str(t['tier']) + 'x' if t['tier'] else ''})  "
                  + "  ".join(f"{a}={v:.3f}" for a, v in t["scores"].items() if v is not None), highlight=False)
    console.print(out)
    unit = payload["unit"] or "score"
    console.print(f"[dim]{leaked} of {len(t['start'])} tokens above {threshold} {unit} ({bits:.1f} {unit}); "
                  "red = leaked, underlined = ground-truth PII[/]")
    return {"id": t["id"], "leaked_tokens": leaked, "leaked_total": bits, "n_tokens": len(t["start"])}
