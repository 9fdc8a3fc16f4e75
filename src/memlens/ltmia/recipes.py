"""Recipes shared by the CLI and the benchmark scripts: classifier settings per data preset,
training a classifier on a generated data set, and the one-command reproduction of the shipped
classifier with its transfer tables."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("memlens")

#: classifier training settings per data preset (the shipped classifier: "large"); the
#: architecture is the authors' (d_model 192, 8 heads, 2 layers, ff 576) except for "tiny" (CI).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(epochs=12, batch_size=32, lr=2e-3, val_fraction=0.1, d_model=64, n_heads=4, d_ff=192),
    "small": dict(epochs=15, batch_size=64, lr=1e-3, val_fraction=0.1),
    "large": dict(epochs=6, batch_size=1024, lr=2e-3, val_fraction=0.05),
}
#: extra settings of the per-fold classifiers of the transfer evaluation (a budget: at most
#: this many training windows, an equal share of each training run)
EVAL_PRESETS: dict[str, dict[str, Any]] = {"large": dict(max_train_windows=40_000)}


def train_settings(preset: str, **given: Any) -> dict[str, Any]:
    s = dict(TRAIN_PRESETS.get(preset, TRAIN_PRESETS["small"]))
    s.update({k: v for k, v in given.items() if v is not None})
    return s


def train_classifier(data: str | Path, out: str | Path, exclude_family: Sequence[str] = (), exclude_domain: Sequence[str] = (),
                     *, device: str = "auto", seed: int = 0, verbose: bool = False, **settings: Any) -> Path:
    """Train a classifier on the runs of ``data`` (minus excluded families / domains) and save it to ``out``."""
    from memlens.ltmia.classifier import LTMIAClassifier
    from memlens.ltmia.features import FeatureSpec
    from memlens.ltmia.generate import LTMIADataset

    ds = LTMIADataset.load(data)
    s = ds.samples.drop_duplicates("run")
    keep = s[~s["family"].isin(list(exclude_family)) & ~s["domain"].isin(list(exclude_domain))]
    runs = keep["run"].tolist()
    if not runs:
        from memlens.ltmia.features import LTMIAError

        raise LTMIAError(f"no runs left to train on (families: {sorted(set(s['family']))}, domains: {sorted(set(s['domain']))})")
    cfg = ds.config
    spec = FeatureSpec(k=cfg.k, max_tokens=cfg.max_tokens, space=cfg.space)
    x, lens, y, _ = ds.arrays(runs)
    kw = train_settings(cfg.name, **settings)
    clf = LTMIAClassifier(spec, device=device, seed=seed, verbose=verbose, **kw).fit(x, y, lengths=lens)
    return clf.save(out, extra={"data": {"preset": cfg.name, "runs": runs, "families": sorted(set(keep["family"])),
                                         "domains": sorted(set(keep["domain"])), "windows": int(len(y)),
                                         "config": cfg.to_dict()}})


def reproduce(out: str | Path, preset: str = "large", modes: Sequence[str] = ("family", "domain", "paper"), *,
              jobs: int = 1, eval_jobs: int | None = None, threads: int | None = None, device: str = "auto",
              evaluate: bool = True, overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None, publish: str | Path | None = None,
              max_generate_seconds: float | None = None) -> dict[str, Any]:
    """Generate ``out/data``, train ``ltmia_default.safetensors`` on all of it, and write the
    transfer evaluation to ``eval/``, in ``publish`` (default: ``out``). Returns a summary with timings.

    ``max_generate_seconds``: time budget of the generation (see :func:`generate`); training and
    evaluation then use the runs that are done, and the summary says how many were skipped."""
    from memlens.ltmia.evaluate import save_result, transfer_eval
    from memlens.ltmia.generate import GenerateConfig, generate

    out = Path(out)
    data = out / "data"
    if publish:
        Path(publish).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = None if (data / "config.json").is_file() else GenerateConfig.preset(preset, **(overrides or {}))
    generate(data, cfg, device=device, jobs=jobs, threads=threads, max_seconds=max_generate_seconds)
    t_gen = time.perf_counter() - t0
    log.info("generated in %.0fs", t_gen)
    name = json.loads((data / "config.json").read_text())["name"]
    clf_path = Path(publish or out) / "ltmia_default.safetensors"
    manifest = json.loads((data / "manifest.json").read_text())
    summary: dict[str, Any] = {"classifier": str(clf_path), "timings": {"generate_s": round(t_gen, 1)},
                               "runs": manifest["n_runs"], "skipped_runs": manifest.get("skipped_runs", [])}
    shutil.copy(data / "manifest.json", Path(publish or out) / "data_manifest.json")
    t1 = time.perf_counter()
    if not evaluate:
        train_classifier(data, clf_path, device=device, **(train_overrides or {}))
        summary["timings"]["train_default_s"] = round(time.perf_counter() - t1, 1)
    else:
        # the shipped classifier trains in the same process pool as the folds' classifiers
        settings = train_settings(name, **(train_overrides or {}))
        result = transfer_eval(data, list(modes), device=device, jobs=eval_jobs or jobs, threads=threads,
                               also_train=(clf_path, dict(train_overrides or {})),
                               **{**settings, **EVAL_PRESETS.get(name, {})})
        summary["timings"]["train_and_eval_s"] = round(time.perf_counter() - t1, 1)
        summary["timings"]["train_default_s"] = result["default_classifier"]["seconds"]
        result["timings"] = summary["timings"]
        save_result(result, Path(publish or out) / "eval")
        summary["eval"] = str(Path(publish or out) / "eval")
    summary["timings"]["total_s"] = round(time.perf_counter() - t0, 1)
    (Path(publish or out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
