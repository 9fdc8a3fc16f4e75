"""The errors a user can fix: one base class, so the command line prints any of them as one line
(its first line, exit code 2) and treats everything else as a bug.

Each subclass also keeps the builtin base it had before (ValueError / RuntimeError), so code that
caught those keeps working. The modules that raise them re-export them under their old names
(``memlens.data.DataError`` and so on).
"""
from __future__ import annotations


class MemlensError(Exception):
    """Base of every error memlens raises for bad input or a bad setup (not for its own bugs)."""


class DataError(MemlensError, ValueError):
    """Input texts are malformed or inconsistent (missing field, duplicate id, bad label, ...)."""


class ModelLoadError(MemlensError, RuntimeError):
    """A model cannot be loaded as asked (unsafe format, remote code not allowed, no weights, ...)."""


class AttackError(MemlensError, ValueError):
    """An attack cannot run on the inputs given (e.g. it needs a reference model)."""


class MetricsError(MemlensError, ValueError):
    """Metrics cannot be computed from the labels and scores given."""


class CacheMissError(MemlensError, RuntimeError):
    """Statistics were asked for from the cache alone, and some are missing."""


class MaskedLMError(MemlensError, ValueError):
    """A masked / diffusion LM cannot be used as asked (no mask token, other vocabulary, ...)."""


class TextTooShortError(MemlensError, ValueError):
    """A text has too few tokens to score."""


class LTMIAError(MemlensError, ValueError):
    """LT-MIA cannot run or train as asked."""


class FeatureError(LTMIAError):
    """LT-MIA features cannot be built from the statistics given."""


class ClassifierError(LTMIAError):
    """An LT-MIA classifier file is missing, malformed or does not fit the features."""


class FinetuneError(MemlensError, RuntimeError):
    """A fine-tune cannot run as asked (missing extra, bad settings, ...)."""


class BlindError(MemlensError, ValueError):
    """The blind baseline cannot be computed for these inputs (one-line message)."""


class SetInferenceError(MemlensError, ValueError):
    """Bad input for set inference (one-line message)."""


class RedactError(MemlensError, ValueError):
    """Bad spans for redaction (one-line message)."""
