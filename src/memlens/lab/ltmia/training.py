"""Classifier settings per data preset, and training a classifier on a generated data set (shared
by the CLI, the transfer evaluation and the reproduction recipe)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
    from memlens.lab.ltmia.generate import LTMIADataset
    from memlens.ltmia.classifier import LTMIAClassifier
    from memlens.ltmia.features import FeatureSpec

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
