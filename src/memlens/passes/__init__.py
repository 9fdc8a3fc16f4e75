"""The model passes: models and texts in, cached statistics out (the only place a model runs).

:mod:`memlens.passes.causal` for autoregressive LMs (TokenStats, paired reductions),
:mod:`memlens.passes.masked` for masked / diffusion LMs (masked losses for SAMA); both write
through :mod:`memlens.cache` and share :mod:`memlens.passes._shared`.
"""
