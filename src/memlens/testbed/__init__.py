"""Synthetic memorization testbed: PII-laden documents with exact membership ground truth.

Profiles (:mod:`.profiles`) are rendered into documents of several kinds with exact PII spans
(:mod:`.documents`), split by construction into members (fine-tuned on, in repetition tiers),
non-members and a population (:mod:`.build`), and used to train a tiny base model and a target
that memorizes the members (:mod:`.train`). :mod:`.check` measures that memorization.

Typical use::

    from memlens.testbed import build
    paths = build("out/testbed", quick=True)      # data + tokenizer + base + target
    paths.members, paths.nonmembers, paths.target, paths.base

Training needs torch and transformers; building the data alone (``build_testbed``) does not.
"""

from pathlib import Path
from typing import Any

from .build import TestbedConfig, TestbedPaths, build_testbed, read_jsonl
from .documents import DOC_KINDS, Document, make_document
from .profiles import PII_TYPES, UNIQUE_PII_TYPES, Profile, ProfileGenerator, generate_profiles


def train_models(*args, **kwargs):
    """Train tokenizer, base, target and references; see :func:`memlens.testbed.train.train_models`."""
    from .train import train_models as _train_models  # lazy: torch is only needed for training

    return _train_models(*args, **kwargs)


# ``build`` (data + models) lives here, above build.py (data) and train.py (models, which reads the
# data's config and paths), so that neither of those two imports the other.
def build(
    out_dir: str | Path,
    quick: bool = True,
    *,
    train: bool = True,
    device: str = "cpu",
    progress: bool = True,
    num_threads: int | None = None,
    retrain: bool = False,
    **overrides: Any,
) -> TestbedPaths:
    """Build a testbed end to end: data, tokenizer, base model, target (and references).

    Args:
        out_dir: output directory.
        quick: ``TestbedConfig.quick()`` when true, else the default ``TestbedConfig()``.
        train: also train the models (otherwise data only).
        device: torch device for training ("cpu", "cuda", "cuda:1", ...).
        progress: show tqdm progress bars.
        num_threads: ``torch.set_num_threads`` for CPU training (None: torch's default).
        retrain: train every model afresh; by default models saved under ``out_dir/models`` with the
            same configuration and data are reused and interrupted training resumes (see
            :func:`memlens.testbed.train.train_models`).
        **overrides: any :class:`TestbedConfig` field, e.g. ``members_per_tier=32``,
            ``finetune_epochs=2``, ``n_reference_models=2``.
    """
    cfg = TestbedConfig.quick(**overrides) if quick else TestbedConfig(**overrides)
    paths = build_testbed(out_dir, cfg)
    if train:
        from .train import train_models as _train  # torch/transformers only when training

        _train(paths, cfg, device=device, progress=progress, num_threads=num_threads, retrain=retrain)
    return paths


__all__ = [
    "DOC_KINDS",
    "PII_TYPES",
    "UNIQUE_PII_TYPES",
    "Document",
    "Profile",
    "ProfileGenerator",
    "TestbedConfig",
    "TestbedPaths",
    "build",
    "build_testbed",
    "generate_profiles",
    "make_document",
    "read_jsonl",
    "train_models",
]
