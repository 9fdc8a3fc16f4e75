"""LT-MIA (Ilić et al., 2026): membership inference as sequence classification over per-token
features comparing a fine-tuned target with its base, learned from fine-tuning runs whose
membership is known by construction.

* :mod:`.features`: the per-token feature vectors (7k + 14), from the paired pass only;
* :mod:`.classifier`: :class:`LTMIAClassifier` (fit / predict_proba / save / load; safetensors);

This package is the attack's runtime only. Training data, classifier training and transfer
tables are the lab's (:mod:`memlens.lab.ltmia`); the command line is :mod:`memlens.cli.ltmia`
(``memlens ltmia generate | train | eval | reproduce | info``).

The shipped classifier (``memlens/data/ltmia_default.safetensors``) is what the ``ltmia``
attack uses by default.
"""
from __future__ import annotations

from pathlib import Path

from memlens.ltmia.classifier import ClassifierError, LTMIAClassifier
from memlens.ltmia.features import (
    FeatureError,
    FeatureSpec,
    LTMIAError,
    feature_names,
    input_features,
    text_features,
)

DEFAULT_CLASSIFIER = Path(__file__).resolve().parent.parent / "data" / "ltmia_default.safetensors"

_LOADED: dict[tuple[str, float, str], LTMIAClassifier] = {}


def load_classifier(path: str | Path = "default", device: str = "cpu") -> LTMIAClassifier:
    """A saved classifier, ``"default"`` for the shipped one; cached per file, mtime and device."""
    p = DEFAULT_CLASSIFIER if str(path) == "default" else Path(path)
    if str(path) == "default" and not p.is_file():
        raise ClassifierError(f"the default LT-MIA classifier is missing ({p}); rebuild it with "
                              "`memlens ltmia generate --preset large` and `memlens ltmia train`")
    key = (str(p.resolve()), p.stat().st_mtime if p.exists() else 0.0, str(device))
    if key not in _LOADED:
        _LOADED[key] = LTMIAClassifier.load(p, device=device)
    return _LOADED[key]


def pass_settings(model: str | Path = "default") -> tuple[tuple[str, ...], dict]:
    """The paired reductions and pair settings a statistics pass needs for the ``ltmia`` attack
    with classifier ``model``: ``(("informia", "ltmia"), {"ltmia_k": 20, "ltmia_space": "logprob"})``."""
    return ("informia", "ltmia"), load_classifier(model).spec.pair_settings()


__all__ = [
    "ClassifierError", "DEFAULT_CLASSIFIER", "FeatureError", "FeatureSpec", "LTMIAClassifier", "feature_names",
    "input_features", "LTMIAError", "load_classifier", "pass_settings", "text_features",
]
