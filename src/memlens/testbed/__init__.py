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

from .build import TestbedConfig, TestbedPaths, build, build_testbed, read_jsonl
from .documents import DOC_KINDS, Document, make_document
from .profiles import PII_TYPES, UNIQUE_PII_TYPES, Profile, ProfileGenerator, generate_profiles


def train_models(*args, **kwargs):
    """Train tokenizer, base, target and references; see :func:`memlens.testbed.train.train_models`."""
    from .train import train_models as _train_models  # lazy: torch is only needed for training

    return _train_models(*args, **kwargs)


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
