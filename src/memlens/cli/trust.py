"""``memlens blind`` and ``memlens setinfer``, and what ``memlens audit`` shares with them: the blind
baseline's console lines, model load options with revisions, benchmark inputs (issue 16)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from memlens.cli._common import console, friendly_errors, setup


def print_blind(result_or_dict) -> None:
    """The blind baseline, printed before the metrics table: a red (differ) or amber (inconclusive)
    warning, or one dim line when the sets look alike."""
    from rich.markup import escape

    b = result_or_dict if isinstance(result_or_dict, dict) and "verdict" in result_or_dict else \
        getattr(result_or_dict, "extra", {}).get("blind")
    if not b:
        return
    m = b["metrics"]
    ci = f" [{m['auc_ci95'][0]:.2f}-{m['auc_ci95'][1]:.2f}]" if m.get("auc_ci95") else ""
    line = f"blind baseline (model-free): AUC {m['auc']:.3f}{ci}, {b['folds']}-fold"
    if b["verdict"] == "ok":
        console.print(f"[dim]{escape(line)} - sets look alike[/]", highlight=False)
    else:
        style = "bold white on red" if b["verdict"] == "differ" else "bold yellow"
        console.print(f"[{style}]{escape(b['warning'])}[/]", highlight=False, soft_wrap=True)
        console.print(f"[dim]{escape(line)}[/]", highlight=False)


def load_options(references: Optional[List[str]], revision: Optional[str], reference_revision: Optional[str], *,
                 gguf_file: Optional[str] = None, **load):
    """(LoadOptions of the target, the references to pass to ``memlens.audit``). A revision belongs to
    one model: when either is given, the references become handles with their own options, so
    ``--revision`` never applies to a reference (nor ``--reference-revision`` to the target)."""
    from memlens.models.handle import LoadOptions, ModelHandle

    refs = list(references or [])
    if refs and (revision is not None or reference_revision is not None):
        refs = [ModelHandle(r, options=LoadOptions(**load, revision=reference_revision)) for r in refs]
    return LoadOptions(**load, revision=revision), refs or None


def benchmark_samples(source: str, preset: Optional[str], **kwargs):
    from memlens.benchmark_data import load_benchmark

    return load_benchmark(source, preset, **kwargs)


@friendly_errors
def blind(
    members: Optional[Path] = typer.Option(None, "--members", help="member texts (jsonl, csv, parquet, txt)"),
    nonmembers: Optional[Path] = typer.Option(None, "--nonmembers", help="non-member texts"),
    data: Optional[Path] = typer.Option(None, "--data", help="one file of texts with a label field (1 member, 0 non-member)"),
    text_field: str = typer.Option("text", "--text-field"),
    folds: int = typer.Option(5, "--folds", min=2, help="cross-validation folds"),
    threshold: float = typer.Option(0.6, "--threshold", help="blind AUC from which the sets count as different"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write blind.json and blind_scores.csv here"),
    shifted_pair: Optional[Path] = typer.Option(None, "--shifted-pair", help="only write a built-in shifted pair here"),
    n: int = typer.Option(48, "--n", min=2, help="--shifted-pair: texts per side"),
):
    """Model-free check: can members and non-members be told apart from their texts alone? (no model needed)"""
    setup(False)
    from memlens.blind import blind_baseline
    from memlens.data import check_labels, gather_audit_samples
    from memlens.testbed.shifted import write_shifted_pair

    if shifted_pair is not None:
        mp, npath = write_shifted_pair(shifted_pair, n, seed=seed)
        console.print(f"wrote {mp} and {npath} (members and non-members of different document kinds: the blind check must warn)")
        return
    if members is None and nonmembers is None and data is None:
        raise typer.BadParameter("give --members and --nonmembers, or --data with a label field (or --shifted-pair DIR)")
    samples = gather_audit_samples(members, nonmembers, data, text_field=text_field)
    check_labels(samples)
    r = blind_baseline([s.text for s in samples], [s.label for s in samples], folds=folds, threshold=threshold, seed=seed,
                       n_bootstrap=bootstrap)
    d = r.to_dict()
    print_blind(d)
    tpr = ", ".join(f"TPR@{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in r.metrics.tpr.items())
    console.print(f"verdict: {r.verdict} ({len(samples)} texts; {tpr})", highlight=False)
    if out is not None:
        import pandas as pd

        out.mkdir(parents=True, exist_ok=True)
        (out / "blind.json").write_text(json.dumps(d, indent=2))
        pd.DataFrame({"id": [s.id for s in samples], "label": [s.label for s in samples], "blind": r.scores}).to_csv(
            out / "blind_scores.csv", index=False)
        console.print(f"wrote {out}/blind.json, blind_scores.csv")


def _read_scores(path: Path):
    import pandas as pd

    from memlens.data import DataError, spreadsheet_unescape

    if not path.is_file():
        raise DataError(f"{path}: no such score file")
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    if "id" in df.columns:
        df["id"] = df["id"].map(spreadsheet_unescape)
    return df


@friendly_errors
def setinfer(
    scores: Optional[Path] = typer.Option(None, "--scores", help="an audit's scores.csv: label 1 = suspect set, label 0 = known unseen"),
    suspect_scores: Optional[Path] = typer.Option(None, "--suspect-scores", help="score CSV of the suspect set (instead of --scores)"),
    unseen_scores: Optional[Path] = typer.Option(None, "--unseen-scores", help="score CSV of the known-unseen set"),
    attacks: Optional[str] = typer.Option(None, "--attacks", "-a", help="comma-separated score columns to combine (default: all)"),
    method: str = typer.Option("split", "--method", help="split (fit on half, test the other half) or crossfit (permutation p-value)"),
    test: str = typer.Option("mannwhitney", "--test", help="mannwhitney (default: heavy-tailed scores) or welch (one-sided)"),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-12, max=0.5, help="significance level (trained on when p < alpha)"),
    permutations: int = typer.Option(199, "--permutations", min=1, help="crossfit: label shuffles for the p-value"),
    curve: bool = typer.Option(True, "--curve/--no-curve", help="p-value against the number of texts (random subsets)"),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="comma-separated subset sizes for the curve (default: log-spaced)"),
    draws: int = typer.Option(20, "--draws", min=1, help="random subsets per size"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="write setinfer.json and pvalue_curve.png here"),
):
    """Set-level inference: is a suspect SET of texts trained on? (combined attack scores, one-sided test, p-value)"""
    setup(False)
    from memlens.data import DataError
    from memlens.setinfer import pvalue_curve, set_inference

    if scores is not None and (suspect_scores is not None or unseen_scores is not None):
        raise typer.BadParameter("give --scores, or --suspect-scores and --unseen-scores, not both")
    if scores is not None:
        df = _read_scores(scores)
        if "label" not in df.columns or df["label"].isna().any() or not set(df["label"].unique()) <= {0, 1}:
            raise DataError(f"{scores}: needs a label for every row (1 = suspect, 0 = known unseen)")
        suspect, unseen = df[df["label"] == 1], df[df["label"] == 0]
    elif suspect_scores is not None and unseen_scores is not None:
        suspect, unseen = _read_scores(suspect_scores), _read_scores(unseen_scores)
    else:
        raise typer.BadParameter("give --scores OUT/scores.csv, or --suspect-scores and --unseen-scores")
    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    kw = {"method": method, "test": test, "n_permutations": permutations}
    r = set_inference(suspect, unseen, names, alpha=alpha, seed=seed, **kw)
    console.print(r.summary(), highlight=False)
    console.print(f"p-value: {r.p_value:.3g}", highlight=False)
    w = r.weights.mean()
    console.print("aggregator weights (standardized scores): " + ", ".join(f"{a} {w[a]:.2f}" for a in r.attacks), highlight=False)
    for n_ in r.notes:
        console.print(f"[dim]note: {n_}[/]", highlight=False)
    result = {"result": r.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    if curve:
        size_list = [int(x) for x in sizes.split(",") if x.strip()] if sizes else None
        c = pvalue_curve(suspect, unseen, r.attacks, sizes=size_list, draws=draws, alpha=alpha, seed=seed, **kw)
        result["curve"] = c.to_dict()
        for row in c.table.itertuples():
            console.print(f"  {row.size:>6} texts per set: median p {row.median_p:.3g} (IQR {row.p25:.3g}-{row.p75:.3g}), "
                          f"p < {alpha:g} in {row.detect_rate:.0%} of {draws} draws", highlight=False)
        needed = "not reached" if c.n_needed is None else str(c.n_needed)
        console.print(f"texts needed for p < {alpha:g}: {needed} per set (median over {draws} random subsets)", highlight=False)
        plot_pvalue_curve(c, out / "pvalue_curve.png")
    (out / "setinfer.json").write_text(json.dumps(result, indent=2, default=float))
    console.print(f"wrote {out}/setinfer.json" + (", pvalue_curve.png" if curve else ""))


def plot_pvalue_curve(c, path: Path) -> Path:
    """Median p-value (IQR band) against texts per set, log y, with the alpha line."""
    from memlens.plots import _pyplot

    plt = _pyplot()
    t = c.table
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.fill_between(t["size"], t["p25"].clip(lower=1e-300), t["p75"].clip(lower=1e-300), alpha=0.25, label="25-75%")
    ax.plot(t["size"], t["median_p"].clip(lower=1e-300), "o-", label="median p")
    ax.axhline(c.alpha, color="k", ls=":", lw=0.8, label=f"alpha {c.alpha:g}")
    ax.set(yscale="log", xlabel="texts per set", ylabel="p-value", title="set inference: p-value vs number of texts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
