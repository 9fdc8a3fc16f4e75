"""LT-MIA (Ilić et al., 2026): a learned classifier over per-token features of the target and its
base (the reference), trained on fine-tuning runs with membership known by construction.

The score is the classifier's logit (higher = more likely a member); a text longer than the
classifier's window (128 tokens for the shipped one) is cut into windows whose logits are
averaged (``windows="all"``) or scored on its first window only (``"first"``, as the authors).
Needs the paired pass with the ``"ltmia"`` reduction: its per-text records in
``AttackInput.extras["pair"]`` (see :mod:`memlens.ltmia.features`).
"""
from __future__ import annotations

import numpy as np

from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, register


def _pass_requirements(params: dict) -> tuple[tuple[str, ...], dict]:
    """The paired "ltmia" reduction, with the settings (k, score space) of the chosen classifier."""
    from memlens.ltmia import ClassifierError, pass_settings  # reads the classifier file (torch)

    try:
        return pass_settings(params["model"])
    except (ClassifierError, OSError) as e:
        raise AttackError(f"ltmia: {e}") from None


@register(
    "ltmia",
    description="Learned transfer MIA: a sequence classifier over per-token target/reference features (LT-MIA).",
    params={
        "model": Param("default", "classifier: 'default' (shipped with memlens) or a .safetensors saved by LTMIAClassifier"),
        "windows": Param("all", "texts longer than the classifier's window: mean logit of all windows, or the first only",
                         ("all", "first")),
        "device": Param("cpu", "device of the classifier: cpu, cuda, auto"),
    },
    needs_reference=True,
    # named explicitly: a heavier paired pass (two vocabulary sorts per token) and a learned model
    in_all=False,
    pass_requirements=_pass_requirements,
)
def ltmia(inp: AttackInput, model: str, windows: str, device: str) -> AttackResult:
    from memlens.ltmia import (
        ClassifierError,
        FeatureError,
        input_features,
        load_classifier,
    )

    try:
        clf = load_classifier(model, device=device)
        chunks, owner = input_features(inp, clf.spec, windows=windows)
    except (ClassifierError, FeatureError) as e:
        raise AttackError(f"ltmia: {e}") from None
    logits = clf.decision_function(chunks) if chunks else np.zeros(0)
    sums = np.bincount(owner, weights=logits, minlength=len(inp))
    counts = np.bincount(owner, minlength=len(inp))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    info = {"classifier": str(model), "k": clf.spec.k, "window": clf.spec.max_tokens, "space": clf.spec.space,
            "windows": windows, "unit": "logit"}
    if len(inp.references) > 1:
        info["note"] = "several references: the reference distribution is their mixture"
    return AttackResult(scores, info=info)
