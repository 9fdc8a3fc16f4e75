"""LT-MIA's per-token feature vectors, assembled from the statistics pass alone.

A text's features come from three products of the one paired pass (target and reference on the
same batch), never from another model run:

* the paired reduction ``"ltmia"`` (:func:`memlens.models.reductions._ltmia_pair`): truth (4), head (4k) and
  tail (3k) blocks, which need both models' full next-token distributions;
* the target's :class:`~memlens.stats.TokenStats` (``logprob``) and the reference's (``logprob``;
  with several references, the log of their mean probability of the true token): the loss block
  (target NLL, reference NLL, their difference) and the global block (mean and standard deviation
  over the text of those three, and the summed difference), repeated at every position.

The layout (7k + 14 columns, k = 20 by default) and order follow the authors' code
(JetBrains-Research/learned-mia, ``features/extraction.py``). Texts are cut into windows of
``max_tokens`` scored tokens (128, as the authors'); the global block is computed per window.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from memlens.errors import FeatureError, LTMIAError  # noqa: F401  (re-exported: its old home)
from memlens.stats import LTMIA_SPACES, TokenStats, ltmia_pair_dim

FEATURE_VERSION = 1
#: key of :attr:`memlens.attacks.base.AttackInput.extras` holding each text's paired-reduction record
PAIR_EXTRAS_KEY = "pair"
#: name of the paired reduction (see :data:`memlens.models.reductions.PAIR_REDUCTIONS`)
REDUCTION = "ltmia"


def feature_names(k: int) -> list[str]:
    names = ["truth_target", "truth_ref", "truth_rank_target", "truth_rank_ref"]
    for j in range(k):
        names += [f"head{j}_target", f"head{j}_ref", f"head{j}_rank_in_ref", f"head{j}_ref_top_rank_in_target"]
    for j in range(k):
        names += [f"tail{j}_target", f"tail{j}_ref", f"tail{j}_rank_in_ref"]
    names += ["nll_target", "nll_ref", "nll_diff"]
    names += ["mean_nll_target", "std_nll_target", "mean_nll_ref", "std_nll_ref", "mean_nll_diff", "std_nll_diff",
              "sum_nll_diff"]
    return names


@dataclass
class FeatureSpec:
    """What a classifier was trained on; a saved classifier carries it, and an audit must match it."""

    k: int = 20
    max_tokens: int = 128
    space: str = "logprob"
    version: int = FEATURE_VERSION
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_tokens < 1:
            raise ValueError("k and max_tokens must be positive")
        if self.space not in LTMIA_SPACES:
            raise ValueError(f"space must be one of {LTMIA_SPACES}, got {self.space!r}")
        if not self.names:
            self.names = feature_names(self.k)
        if len(self.names) != self.dim:
            raise ValueError(f"{len(self.names)} feature names for {self.dim} features")

    @property
    def dim(self) -> int:
        return 7 * self.k + 14

    @property
    def pair_dim(self) -> int:
        return ltmia_pair_dim(self.k)

    def pair_settings(self) -> dict[str, Any]:
        """Settings of the paired pass (``CausalScorer(pair_settings=...)``) these features need."""
        return {"ltmia_k": self.k, "ltmia_space": self.space}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        version = int(d.get("version", FEATURE_VERSION))
        if version > FEATURE_VERSION:
            raise FeatureError(f"features of version {version} are newer than this memlens (version {FEATURE_VERSION})")
        return cls(k=int(d["k"]), max_tokens=int(d["max_tokens"]), space=str(d.get("space", "logprob")), version=version,
                   names=list(d.get("names") or []))


def _window_features(pair: np.ndarray, nll_t: np.ndarray, nll_r: np.ndarray) -> np.ndarray:
    """[T, 7k + 14] for one window of T tokens (T >= 1)."""
    diff = nll_t - nll_r
    loss = np.stack([nll_t, nll_r, diff], axis=-1)

    def mean_std(x: np.ndarray) -> tuple[float, float]:
        m = float(x.mean())
        return m, float(np.sqrt(((x - m) ** 2).mean() + 1e-6))

    g = [*mean_std(nll_t), *mean_std(nll_r), *mean_std(diff), float(diff.sum())]
    glob = np.broadcast_to(np.asarray(g, dtype=np.float64), (len(nll_t), 7))
    return np.concatenate([pair.astype(np.float64), loss, glob], axis=-1).astype(np.float32)


def text_features(pair: np.ndarray, target_logprob: np.ndarray, ref_logprob: np.ndarray, spec: FeatureSpec,
                  windows: str = "first") -> list[np.ndarray]:
    """Feature windows of one text: ``[T_w, 7k + 14]`` arrays, T_w <= ``spec.max_tokens``.

    ``pair``: the text's ``"ltmia"`` paired reduction [T, 7k + 4]; ``target_logprob`` /
    ``ref_logprob``: log-probabilities of its tokens [T]. ``windows="first"`` keeps the first
    ``max_tokens`` tokens (as the authors), ``"all"`` cuts the whole text into consecutive windows.
    A text with no scored token gives no window.
    """
    pair = np.asarray(pair)
    if pair.ndim != 2 or pair.shape[1] != spec.pair_dim:
        raise FeatureError(f"the paired 'ltmia' block has shape {pair.shape}; features with k={spec.k} need "
                           f"[T, {spec.pair_dim}] (run the paired pass with pair_settings {spec.pair_settings()})")
    t = len(pair)
    if len(target_logprob) != t or len(ref_logprob) != t:
        raise FeatureError(f"token counts differ: pair block {t}, target {len(target_logprob)}, reference {len(ref_logprob)}")
    nll_t = -np.asarray(target_logprob, dtype=np.float64)
    nll_r = -np.asarray(ref_logprob, dtype=np.float64)
    if windows not in ("first", "all"):
        raise FeatureError(f"windows must be 'first' or 'all', got {windows!r}")
    w = spec.max_tokens
    starts = [0] if windows == "first" else list(range(0, t, w))
    return [_window_features(pair[s:s + w], nll_t[s:s + w], nll_r[s:s + w]) for s in starts if s < t]


def reference_logprob(references: Sequence[TokenStats]) -> np.ndarray:
    """log q(x_t) of the true tokens: the reference's, or the log of the references' mean probability."""
    if len(references) == 1:
        return np.asarray(references[0].logprob, dtype=np.float64)
    from scipy.special import logsumexp  # as rmia's mixture of references

    lp = np.stack([np.asarray(r.logprob, dtype=np.float64) for r in references])
    return logsumexp(lp, axis=0) - np.log(len(references))


def input_features(inp: Any, spec: FeatureSpec, windows: str = "first") -> tuple[list[np.ndarray], np.ndarray]:
    """Feature windows of every text of an :class:`~memlens.attacks.base.AttackInput`.

    Returns the windows and, for each, the index of its text. Needs the paired pass: the
    ``"ltmia"`` reduction of each text in ``inp.extras["pair"]`` (a list of per-text dicts, as
    :class:`~memlens.models.causal.CausalScorer` returns them) and the references' statistics.
    """
    records = (inp.extras or {}).get(PAIR_EXTRAS_KEY)
    if records is None or len(records) != len(inp.texts) or any(REDUCTION not in r for r in records):
        raise FeatureError("LT-MIA needs the paired target/reference pass with the 'ltmia' reduction "
                           f"(pair reductions including 'ltmia', pair settings {spec.pair_settings()}), whose per-text "
                           f"records go in AttackInput.extras[{PAIR_EXTRAS_KEY!r}]")
    if not inp.references:
        raise FeatureError("LT-MIA needs a reference model (the target's base)")
    chunks: list[np.ndarray] = []
    owner: list[int] = []
    for i, rec in enumerate(records):
        refs = [r.stats[i] for r in inp.references]
        if any(len(r) != len(inp.target[i]) for r in refs):
            raise FeatureError("LT-MIA needs references that share the target's tokenizer (they are paired token by token)")
        ws = text_features(rec[REDUCTION], inp.target[i].logprob, reference_logprob(refs), spec, windows)
        chunks.extend(ws)
        owner.extend([i] * len(ws))
    return chunks, np.asarray(owner, dtype=np.int64)


def pad(chunks: Sequence[np.ndarray], max_tokens: int, dim: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length windows into ``[n, max_tokens, dim]`` (zero padded) and their lengths."""
    x = np.zeros((len(chunks), max_tokens, dim), dtype=dtype)
    lengths = np.zeros(len(chunks), dtype=np.int64)
    for i, c in enumerate(chunks):
        c = np.asarray(c)[:max_tokens]
        if c.ndim != 2 or c.shape[1] != dim:
            raise FeatureError(f"window {i} has shape {c.shape}, expected [T, {dim}]")
        x[i, : len(c)] = c
        lengths[i] = len(c)
    return x, lengths
