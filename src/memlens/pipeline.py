"""Deprecated home of the causal pass: use :mod:`memlens.passes.causal` (and
:mod:`memlens.models.handle` for ``LoadOptions``/``ModelHandle``). Kept for one release."""
from memlens.errors import CacheMissError  # noqa: F401
from memlens.models.handle import LoadOptions, ModelHandle  # noqa: F401
from memlens.passes.causal import PassSettings, StatsBundle, align_by_spans, compute_stats  # noqa: F401
