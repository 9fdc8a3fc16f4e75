"""Build the report's data and render it with jinja2 into one offline HTML file."""
from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TOKEN_ATTACK_PREFERENCE = ("informia_token", "minkpp")
ROUND = 4


@dataclass
class SavedAudit:
    """What a saved audit directory holds, in the shape the report needs."""

    results: dict[str, Any]
    scores: list[dict[str, Any]]  # rows of scores.csv
    texts: dict[str, dict[str, Any]]  # id -> {text, label, meta}
    tokens: dict[str, dict[str, Any]]  # id -> columns of token_scores.parquet


def load_saved(out_dir: str | os.PathLike) -> SavedAudit:
    """Read results.json, scores.csv, texts.jsonl and token_scores.parquet of an audit."""
    import pandas as pd
    import pyarrow.parquet as pq

    from memlens.data import DataError

    d = Path(out_dir)
    needed = ["results.json", "scores.csv", "texts.jsonl", "token_scores.parquet"]
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} is not an audit output directory: it lacks {', '.join(missing)}")
    results = json.loads((d / "results.json").read_text())
    scores = pd.read_csv(d / "scores.csv", dtype={"id": str}).to_dict("records")
    texts = {}
    with open(d / "texts.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                texts[str(rec["id"])] = rec
    tokens = {str(r["id"]): r for r in pq.read_table(d / "token_scores.parquet").to_pylist()}
    return SavedAudit(results, scores, texts, tokens)


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figures(saved: SavedAudit) -> dict[str, str]:
    """ROC curves (log-log) and member/non-member score histograms as embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memlens.metrics import roc

    attacks = list(saved.results.get("metrics", {}))
    rows = [r for r in saved.scores if r.get("label") in (0, 1, 0.0, 1.0)]
    if not attacks or not rows:
        return {}
    labels = np.array([int(r["label"]) for r in rows])
    out = {}
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    n_neg = max(int((labels == 0).sum()), 1)
    for a in attacks:
        s = np.array([r[a] for r in rows], dtype=float)
        if not np.isfinite(s).all():
            continue
        f, t = roc(labels, s)
        ax.plot(np.maximum(f, 1e-4), np.maximum(t, 1e-4), drawstyle="steps-post",
                label=f"{a} ({saved.results['metrics'][a]['auc']:.3f})")
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=(max(0.5 / n_neg, 1e-4), 1), ylim=(max(0.5 / n_neg, 1e-4), 1.02),
           xlabel="false positive rate", ylabel="true positive rate", title="ROC (log-log)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out["roc"] = _png_data_uri(fig)
    plt.close(fig)
    cols = min(4, len(attacks))
    nrows = int(np.ceil(len(attacks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    for ax, a in zip(axes.flat, attacks):
        s = np.array([r[a] for r in rows], dtype=float)
        ok = np.isfinite(s)
        bins = np.histogram_bin_edges(s[ok], bins=30) if ok.any() else 10
        ax.hist(s[ok & (labels == 0)], bins=bins, alpha=0.6, label="non-members", color="#4477aa")
        ax.hist(s[ok & (labels == 1)], bins=bins, alpha=0.6, label="members", color="#cc3311")
        ax.set_title(a, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    out["hist"] = _png_data_uri(fig)
    plt.close(fig)
    return out


def _round(a) -> list:
    arr = np.asarray(a, dtype=np.float64)
    return [None if not np.isfinite(v) else round(float(v), ROUND) for v in arr]


def _pii_index(text_rec: dict[str, Any], starts, ends, types: list[str]) -> list[int]:
    """Per token, the index (in ``types``) of the ground-truth PII type it overlaps, else -1."""
    out = [-1] * len(starts)
    for span in (text_rec.get("meta") or {}).get("pii") or []:
        t = str(span.get("type", "pii"))
        if t not in types:
            types.append(t)
        a, b = int(span["start"]), int(span["end"])
        for i, (s, e) in enumerate(zip(starts, ends)):
            if s < b and e > a:
                out[i] = types.index(t)
    return out


def build_payload(saved: SavedAudit) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    res = saved.results
    attacks = list(res.get("settings", {}).get("attacks") or res.get("metrics", {}).keys())
    score_cols = [a for a in attacks if saved.scores and a in saved.scores[0]]
    first_tokens = next(iter(saved.tokens.values()), {})
    token_attack = next((a for a in TOKEN_ATTACK_PREFERENCE if f"{a}_token" in first_tokens), None)
    unit = "bits" if token_attack == "informia_token" else ("z" if token_attack else "")
    pii_types: list[str] = []
    texts = []
    for row in saved.scores:
        tid = str(row["id"])
        trec = saved.texts.get(tid, {"text": "", "meta": {}})
        tok = saved.tokens.get(tid, {})
        starts = [int(x) for x in tok.get("span_start", [])]
        ends = [int(x) for x in tok.get("span_end", [])]
        tier = row.get("tier")
        texts.append({
            "id": tid,
            "label": None if row.get("label") is None or row.get("label") != row.get("label") else int(row["label"]),
            "tier": None if tier is None or tier != tier else int(tier),
            "scores": {a: (None if row[a] != row[a] else round(float(row[a]), ROUND)) for a in score_cols},
            "text": trec.get("text", ""),
            "start": starts,
            "end": ends,
            "lp_t": _round(tok.get("target_logprob", [])),
            "lp_r": _round(tok.get("reference_logprob", [])) if "reference_logprob" in tok else None,
            "s": _round(tok.get(f"{token_attack}_token", [])) if token_attack else None,
            "pii": _pii_index(trec, starts, ends, pii_types),
        })
    metrics = []
    for name, m in res.get("metrics", {}).items():
        metrics.append({"attack": name, "auc": m["auc"], "auc_ci": m.get("auc_ci95"), "tpr": m.get("tpr_at_fpr", {}),
                        "tpr_ci": m.get("tpr_at_fpr_ci95", {}), "notes": m.get("notes", [])})
    settings = res.get("settings", {})
    models = [{"role": "target", **settings.get("target", {})}] + [{"role": "reference", **r} for r in settings.get("references", [])]
    return {
        "version": res.get("memlens_version"), "settings": settings, "models": models, "metrics": metrics,
        "notes": res.get("notes", []), "attacks": score_cols, "token_attack": token_attack, "unit": unit,
        "pii_types": pii_types, "texts": texts, "demo": res.get("demo"),
    }


def _safe_json(data: Any) -> str:
    """JSON that cannot close its <script> element or open a comment: <, > and & as \\u escapes."""
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render(payload: dict[str, Any], figures: dict[str, str]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("memlens.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    tpl = env.get_template("report.html.j2")
    return tpl.render(p=payload, figures=figures, data_json=_safe_json(payload))


def write_report_from_dir(out_dir: str | os.PathLike) -> Path:
    """Rebuild ``report.html`` from an audit's saved files."""
    saved = load_saved(out_dir)
    html = render(build_payload(saved), _figures(saved))
    path = Path(out_dir) / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_report(result, out_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` for an audit result (saving the result first if needed)."""
    out = Path(out_dir)
    if not (out / "token_scores.parquet").is_file() or not (out / "texts.jsonl").is_file():
        result.save(out)
    return write_report_from_dir(out)
