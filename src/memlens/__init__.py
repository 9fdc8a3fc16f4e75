"""memlens: audit language models for training-data memorization.

>>> import memlens
>>> result = memlens.audit(target="./target", references=["./base"],
...                        members="members.jsonl", nonmembers="nonmembers.jsonl")
>>> result.metrics["informia"].auc
"""
__version__ = "0.1.0"

from memlens.audit import AuditResult, audit, score_texts  # noqa: E402,F401
from memlens.attacks import REGISTRY as ATTACKS  # noqa: E402,F401
from memlens.stats import TokenStats  # noqa: E402,F401

__all__ = ["audit", "score_texts", "AuditResult", "ATTACKS", "TokenStats", "__version__"]
