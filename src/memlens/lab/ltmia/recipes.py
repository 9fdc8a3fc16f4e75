"""The one-command reproduction of the shipped classifier with its transfer tables (the CLI's
``memlens ltmia reproduce`` and the benchmark scripts). Classifier settings and training on a
generated data set are :mod:`.training`."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from memlens.lab.ltmia.training import EVAL_PRESETS, TRAIN_PRESETS, train_classifier, train_settings  # noqa: F401

log = logging.getLogger("memlens")

def reproduce(out: str | Path, preset: str = "large", modes: Sequence[str] = ("family", "domain", "paper"), *,
              jobs: int = 1, eval_jobs: int | None = None, threads: int | None = None, device: str = "auto",
              evaluate: bool = True, overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None, publish: str | Path | None = None,
              max_generate_seconds: float | None = None) -> dict[str, Any]:
    """Generate ``out/data``, train ``ltmia_default.safetensors`` on all of it, and write the
    transfer evaluation to ``eval/``, in ``publish`` (default: ``out``). Returns a summary with timings.

    ``max_generate_seconds``: time budget of the generation (see :func:`generate`); training and
    evaluation then use the runs that are done, and the summary says how many were skipped."""
    from memlens.lab.ltmia.evaluate import save_result, transfer_eval
    from memlens.lab.ltmia.generate import GenerateConfig, generate

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
