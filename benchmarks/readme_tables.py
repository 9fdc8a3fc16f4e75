"""The README's result tables, generated from the committed result files (benchmarks/results/*.json).

    python benchmarks/readme_tables.py           # rewrite every block between the markers in README.md
    python benchmarks/readme_tables.py --check   # exit 1, naming the tables, when a block and its file disagree

A block is ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->``; what lies between is replaced by the
table NAME renders from its result file, followed by a line naming the file, its commit and machine.
Adding a table: write a function from the result file's JSON to markdown lines and register it with
``@table("NAME", "results/FILE.json")``, then put the two markers in the README and run this script.
Every result file must record where it came from (``provenance``: commit and machine).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass
class Table:
    name: str
    file: str  # relative to benchmarks/
    render: Callable[[dict], list[str]]


TABLES: dict[str, Table] = {}


def table(name: str, file: str):
    def register(fn: Callable[[dict], list[str]]):
        TABLES[name] = Table(name, file, fn)
        return fn

    return register


def provenance(res: dict) -> dict:
    """Where a result came from: ``provenance`` at the top level or in its study (``demo``)."""
    for p in (res.get("provenance"), (res.get("demo") or {}).get("provenance")):
        if isinstance(p, dict) and p.get("machine") and ("commit" in p):
            return p
    raise ValueError("no provenance (commit and machine) recorded")


def _f(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _tiers(keys) -> list[str]:
    return sorted(keys, key=lambda k: int(str(k).rstrip("x")))


def _demo_auc(res: dict) -> list[str]:
    """AUC (TPR@1%FPR) overall and per tier, the best AUC of each column in bold."""
    per_tier, metrics = res["demo"]["per_tier"], res["metrics"]
    tiers = _tiers(per_tier)
    attacks = list(metrics)
    cols = {"overall": {a: (metrics[a]["auc"], metrics[a]["tpr_at_fpr"].get("1%")) for a in attacks}}
    for t in tiers:
        cols[t] = {a: (per_tier[t][a]["auc"], per_tier[t][a]["tpr_at_1%fpr"]) for a in attacks}
    best = {c: max(round(v[0], 3) for v in col.values()) for c, col in cols.items()}
    lines = ["| attack | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for a in attacks:
        cells = []
        for c, col in cols.items():
            auc, tpr = col[a]
            s = _f(auc)
            # bold only a column's single best (every attack at 1.000 on 16x: nothing stands out)
            if round(auc, 3) == best[c] and sum(round(v[0], 3) == best[c] for v in col.values()) == 1:
                s = f"**{s}**"
            cells.append(f"{s} ({_f(tpr, 2)})")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _demo_extraction(res: dict) -> list[str]:
    ex = res["demo"]["extraction"]
    lines = ["| group | PII values | exact | fuzzy |", "|---|---|---|---|"]
    keys = _tiers([k for k in ex["by_tier"] if k != "nonmember"]) + (["nonmember"] if "nonmember" in ex["by_tier"] else [])
    for k in keys:
        r = ex["by_tier"][k]
        lines.append(f"| {'non-members' if k == 'nonmember' else f'members {k}x'} | {r['n']} | {_pct(r['exact'])} | {_pct(r['fuzzy'])} |")
    return lines


def _demo_localization(res: dict) -> list[str]:
    loc = res["demo"]["localization"]
    lines = ["| token score | AUC | top-k precision | member texts | PII tokens / all tokens |", "|---|---|---|---|---|"]
    for name, r in loc.items():
        lines.append(f"| {name} | {_f(r['auc'])} | {_f(r['topk_precision'])} | {r['n_texts']} | {r['n_secret_tokens']} / {r['n_tokens']} |")
    return lines


def _demo_leakage(res: dict) -> list[str]:
    lk = res["demo"]["leakage"]
    names = {"1x": "members 1x", "4x": "members 4x", "16x": "members 16x", "nonmember": "non-members"}
    lines = ["| group | texts | leaked tokens per text | texts with any | flagged as leaking | PII share of leaked tokens |",
             "|---|---|---|---|---|---|"]
    for g, r in lk["groups"].items():
        lines.append(f"| {names.get(g, g)} | {r['texts']} | {r['leaked_tokens_per_text']:.2f} | {_pct(r['texts_with_leaked_tokens'])} | "
                     f"{_pct(r['flagged'])} ({round(r['flagged'] * r['texts'])}) | {_pct(r['pii_share_of_leaked'])} |")
    return lines


table("demo-default", "results/demo-default-2cores.json")(_demo_auc)
table("demo-default-leakage", "results/demo-default-2cores.json")(_demo_leakage)
table("demo-default-extraction", "results/demo-default-2cores.json")(_demo_extraction)
table("demo-default-localization", "results/demo-default-2cores.json")(_demo_localization)


SETTINGS = {"base": "1 base reference", "format": "1 format-matched reference", "split_online": "4 split references, online",
            "split_offline": "4 split references, offline"}


def _claim_cell(m: dict) -> str:
    """AUC (TPR@1%FPR) of one scope: mean ± sd over seeds, or one seed's value."""
    auc, tpr = m["auc"], m["tpr@1%"]
    if isinstance(auc, dict):  # several seeds: mean ± sd
        return f"{auc['mean']:.3f} ± {auc['sd']:.3f} ({tpr['mean']:.2f})"
    return f"{_f(auc)} ({_f(tpr, 2)})"


def _claim(rows: dict) -> list[str]:
    scopes = ["overall", *_tiers([k for k in next(iter(rows.values())) if k != "overall"])]
    lines = ["| references | attack | " + " | ".join(scopes) + " |", "|---" * (len(scopes) + 2) + "|"]
    for key, by_scope in rows.items():
        setting, attack = key.split("/", 1)
        lines.append(f"| {SETTINGS.get(setting, setting)} | {attack} | " + " | ".join(_claim_cell(by_scope[s]) for s in scopes) + " |")
    return lines


def _e2e(res: dict) -> list[str]:
    cold, warm, bare = res["audit_cold"], res["audit_warm"], res["bare"]["seconds"]
    lines = ["| what | seconds | vs bare forward |", "|---|---|---|",
             f"| bare paired forward (bf16, batch 64, padded; tokenizing excluded) | {bare:.1f} | 1.00× |",
             f"| MIMIR-style loop (one text at a time, fp32 softmax), extrapolated | {res['naive']['seconds_extrapolated']:.0f} | "
             f"{res['naive']['seconds_extrapolated'] / bare:.0f}× |",
             f"| memlens audit, whole command, empty cache | {cold['wall_s']:.1f} | {cold['wall_s'] / bare:.2f}× |",
             f"| memlens audit, whole command, warm cache | {warm['wall_s']:.1f} | {warm['wall_s'] / bare:.2f}× |"]
    if "peak_rss_mb" in cold:  # measured in the audit's own processes (benchmarks/_peak_rss.py)
        lines.append(f"| peak resident memory of the audit's largest process, cold / warm | {cold['peak_rss_mb']:,.0f} MB / "
                     f"{warm['peak_rss_mb']:,.0f} MB | |")
    for stage, s in cold["timings"].items():
        if s >= 0.5:
            lines.append(f"| cold run stage: {stage} | {s:.1f} | |")
    return lines


table("informia-claim", "results/informia-claim-h200/informia_claim.json")(lambda res: _claim(res["combined"]))
table("informia-claim-repeats4", "results/informia-claim-h200-repeats4/informia_claim.json")(
    lambda res: _claim({k: v for k, v in res["combined"].items() if k.startswith("split_")}))
table("smollm2-references", "results/smollm2-references-h200/smollm2_references.json")(lambda res: _claim(res["combined"]))
table("audit-e2e-135m", "results/audit-e2e-h200x2-135m-20k-nproc1.json")(_e2e)
table("audit-e2e-135m-2gpu", "results/audit-e2e-h200x2-135m-20k-nproc2.json")(_e2e)
table("audit-e2e-1b", "results/audit-e2e-h200x2-1b-20k.json")(_e2e)


def render(t: Table) -> str:
    path = ROOT / "benchmarks" / t.file
    res = json.loads(path.read_text())
    p = provenance(res)
    commit = p.get("commit") or (f"not recorded; committed in {p['committed_in']}" if p.get("committed_in") else "not recorded")
    src = f"<sub>Generated by `benchmarks/readme_tables.py` from `benchmarks/{t.file}` (commit {commit}; {p['machine']}).</sub>"
    return "\n".join(t.render(res) + ["", src])


BLOCK = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?:(?P<body>.*?)\n)?(<!-- /table:(?P=name) -->)", re.S)


def update(text: str) -> tuple[str, list[str]]:
    """``text`` with every block rendered afresh, and the names of the blocks that changed."""
    changed: list[str] = []
    seen: set[str] = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise SystemExit(f"README block table:{name} has no registered table in benchmarks/readme_tables.py")
        seen.add(name)
        body = render(TABLES[name])
        if body != (m.group("body") or ""):
            changed.append(name)
        return m.group(1) + body + "\n" + m.group(4)

    out = BLOCK.sub(sub, text)
    missing = sorted(set(TABLES) - seen)
    if missing:
        raise SystemExit(f"registered tables not in the README: {', '.join(missing)}")
    return out, changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check: exit 1 when a table and its result file disagree")
    ap.add_argument("--readme", type=Path, default=README, help="the file with the marked blocks (default: README.md)")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new, changed = update(text)
    if args.check:
        if changed:
            print(f"README tables out of date: {', '.join(changed)}; run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
    print(f"{len(changed)} table(s) rewritten" + (f": {', '.join(changed)}" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
