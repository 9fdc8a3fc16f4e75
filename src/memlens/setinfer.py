"""Set-level (dataset) inference: was this *set* of texts trained on?

Single-text membership attacks on large models are often near chance, yet the question users ask
is usually about a corpus ("was our collection / this book in the training data?"). Maini et al.
("LLM Dataset Inference: Did you train on my dataset?", 2024) answer it by aggregating many
per-text attack scores: a linear model learns how to weigh the attacks on one part of a suspect
set and of a set known to be unseen, the other parts are scored with it, and a one-sided test
asks whether the suspect texts score higher than the unseen ones.

Two ways to get honest aggregated scores (``method``):

* ``"split"`` (default, Maini et al.'s protocol): both sets are split in half (stratified); the
  aggregator (standardized attack scores, logistic regression with non-negative weights) is fitted on one half and scores
  the other, and the test compares the held-out halves. The aggregator never sees the tested
  texts, so under the null (suspect set exchangeable with the unseen one) the held-out scores of
  both sets are identically distributed and the test's p-value is valid as printed.
* ``"crossfit"``: every text gets a held-out score (``folds`` parts, each scored by an aggregator
  fitted on the others), so all texts are tested. Pooling the folds is NOT valid with a
  parametric p-value: under the null each fold's aggregator learns a noise direction, and the
  two folds' suspect-minus-unseen differences are both driven by the product of the same two
  noise vectors, so they are positively correlated and a t-test on the pool over-rejects (we
  measured 6.5-8.5% false positives at alpha 0.05 for Welch and 8-11% for Mann-Whitney, 200
  splits each). The p-value is therefore a permutation p-value: the whole procedure is rerun
  with the suspect/unseen labels shuffled ``n_permutations`` times, which is exact under
  exchangeability (smallest p: 1/(n_permutations + 1)).

:func:`false_positive_rate` measures the level on texts that are all unseen (the tests and
``benchmarks/setinfer_fpr.py`` check it); :func:`pvalue_curve` answers "how many documents are
needed for p < 0.01".

The default test is Mann-Whitney, not Maini et al.'s Welch t-test: attack scores are often
heavy-tailed (a few texts the model predicts very badly), and Welch then loses most of its power
while the rank test keeps it and its p-value is exact under the null for any score distribution.
Measured (benchmarks/setinfer_fpr.py, 3 correlated synthetic attacks, single-attack AUC about 0.6):
with normal scores both need 200 texts per set for median p < 0.01 and both hold alpha; with
skewed scores (skewness -2.8) Welch needs 300 and Mann-Whitney 150. Its price: with very few
tested texts the exact rank p-value cannot get small (4 + 4 held-out texts: at least 1/70), see
the note :func:`set_inference` adds; ``test="welch"`` is there for those.
"""
from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from memlens.errors import SetInferenceError  # noqa: F401  (raised here; defined with the other user errors)

TESTS = ("welch", "mannwhitney")
METHODS = ("split", "crossfit")
#: Columns of an audit's score table that are not attack scores.
NON_ATTACK_COLUMNS = ("id", "label", "tier", "kind")


_state = threading.local()


def _one_blas_thread(fn):
    """Run ``fn`` with BLAS/OpenMP limited to one thread. Every fit here is tiny (a few hundred texts,
    a handful of attacks), so extra threads only add synchronisation: on a 2-core box shared with
    other work a permutation p-value (199 x 2 fits) took 15 s with the default threads and 1.5 s with
    one. Nested calls (curves of many tests) enter the limit once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_state, "limited", False):
            return fn(*args, **kwargs)
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        _state.limited = True
        try:
            with threadpool_limits(1):
                return fn(*args, **kwargs)
        finally:
            _state.limited = False

    return wrapper


def _matrix(df: pd.DataFrame | np.ndarray, attacks: Sequence[str] | None, what: str) -> tuple[np.ndarray, list[str]]:
    if isinstance(df, np.ndarray):
        x = np.asarray(df, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        names = list(attacks) if attacks is not None else [f"score{i}" for i in range(x.shape[1])]
        if len(names) != x.shape[1]:
            raise SetInferenceError(f"{what}: {x.shape[1]} score columns but {len(names)} attack names")
    else:
        if attacks is None:
            names = [c for c in df.columns if c not in NON_ATTACK_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]
        else:
            missing = [a for a in attacks if a not in df.columns]
            if missing:
                raise SetInferenceError(f"{what}: no score column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
            names = list(attacks)
        if not names:
            raise SetInferenceError(f"{what}: no numeric attack score columns")
        x = df[names].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise SetInferenceError(f"{what}: {int((~np.isfinite(x)).sum())} scores are NaN or infinite")
    return x, names


def _test(s: np.ndarray, u: np.ndarray, test: str) -> tuple[float, float]:
    """One-sided: are the suspect scores larger? (statistic, p-value)"""
    from scipy import stats

    if np.ptp(np.r_[s, u]) == 0:
        # All equal (e.g. every aggregator weight at its bound 0): no evidence for the suspect set
        # (scipy would return NaN for Welch).
        return 0.0, 1.0
    if test == "welch":
        r = stats.ttest_ind(s, u, equal_var=False, alternative="greater")
    else:
        r = stats.mannwhitneyu(s, u, alternative="greater")
    return float(r.statistic), float(r.pvalue)


class NonNegativeLogistic(ClassifierMixin, BaseEstimator):
    """L2-penalized logistic regression whose weights are >= 0 (intercept free), with
    scikit-learn's objective 0.5 * ||w||^2 + C * sum of log-losses, minimized by scipy's L-BFGS-B
    under bounds (scikit-learn's LogisticRegression has no sign constraint). Features are
    standardized inside (as StandardScaler does; constant columns left unscaled), so ``coef_`` are
    weights on standardized scores; doing it here rather than in a Pipeline halves the fit time,
    which matters for permutation p-values (hundreds of refits).

    Why the constraint: attack scores are oriented "higher = more likely a member". A free
    aggregator learns the sign from the data, so a suspect set that scores *lower* than the
    unseen one (a distribution shift, the opposite of memorization) would get negative weights and
    be "detected" by the one-sided test. With non-negative weights only a shift towards
    member-like scores counts.
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> NonNegativeLogistic:
        from scipy.optimize import minimize
        from scipy.special import expit, log_expit

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        x = (x - self.mean_) / self.scale_
        sign = 2.0 * y - 1.0

        def loss(theta):
            w, b = theta[:-1], theta[-1]
            f = x @ w + b
            r = expit(f) - y
            value = 0.5 * w @ w - self.C * log_expit(sign * f).sum()
            return value, np.r_[w + self.C * (x.T @ r), self.C * r.sum()]

        bounds = [(0.0, None)] * x.shape[1] + [(None, None)]
        res = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
        self.coef_, self.intercept_ = res.x[None, :-1], res.x[-1:]
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_ @ self.coef_[0] + self.intercept_[0]


def _aggregator(C: float, nonnegative: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if nonnegative:
        return NonNegativeLogistic(C)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def _coef(agg) -> np.ndarray:
    """Weights on the standardized attack scores, for either aggregator."""
    return (agg if isinstance(agg, NonNegativeLogistic) else agg[-1]).coef_[0]


def cross_fit_scores(x_suspect: np.ndarray, x_unseen: np.ndarray, folds: int = 2, seed: int = 0, C: float = 1.0,
                     nonnegative: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out aggregated scores of every suspect and unseen text, and the per-fold weights.

    The aggregator is fitted on the other folds only; its decision function (log-odds of
    "suspect") is the aggregated score. Returns (suspect scores, unseen scores, weights with one
    row per fold on the standardized attack scores).
    """
    from sklearn.model_selection import StratifiedKFold

    x = np.vstack([x_suspect, x_unseen])
    y = np.r_[np.ones(len(x_suspect), int), np.zeros(len(x_unseen), int)]
    out = np.empty(len(y))
    weights = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        agg = _aggregator(C, nonnegative).fit(x[train], y[train])
        out[test] = agg.decision_function(x[test])
        weights.append(_coef(agg))
    return out[y == 1], out[y == 0], np.asarray(weights)


def split_scores(x_suspect: np.ndarray, x_unseen: np.ndarray, seed: int = 0, C: float = 1.0, nonnegative: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maini et al.'s split: fit the aggregator on a stratified half, score the other half.
    Returns (held-out suspect scores, held-out unseen scores, weights as a one-row array)."""
    from sklearn.model_selection import train_test_split

    x = np.vstack([x_suspect, x_unseen])
    y = np.r_[np.ones(len(x_suspect), int), np.zeros(len(x_unseen), int)]
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    agg = _aggregator(C, nonnegative).fit(x_fit, y_fit)
    out = agg.decision_function(x_test)
    return out[y_test == 1], out[y_test == 0], _coef(agg)[None, :]


@dataclass
class SetInferenceResult:
    p_value: float
    statistic: float
    test: str
    method: str
    alpha: float
    n_suspect: int
    n_unseen: int
    attacks: list[str]
    # per fitted aggregator (one for "split", one per fold for "crossfit"), its weight on each standardized attack score
    weights: pd.DataFrame
    suspect_scores: np.ndarray  # held-out aggregated scores of the tested suspect texts
    unseen_scores: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def detected(self) -> bool:
        return self.p_value < self.alpha

    def summary(self) -> str:
        verdict = "trained on (rejects 'unseen')" if self.detected else "not shown to be trained on"
        return (f"set inference ({self.method}, {self.test}, {self.n_suspect} suspect vs {self.n_unseen} unseen texts, "
                f"{len(self.attacks)} attacks): p = {self.p_value:.3g} -> {verdict} at alpha {self.alpha:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": self.p_value, "statistic": self.statistic, "test": self.test, "method": self.method, "alpha": self.alpha,
                "detected": self.detected, "n_suspect": self.n_suspect, "n_unseen": self.n_unseen, "attacks": self.attacks,
                "mean_weights": self.weights.mean().to_dict(), "summary": self.summary(), "notes": self.notes}


@_one_blas_thread
def set_inference(suspect: pd.DataFrame | np.ndarray, unseen: pd.DataFrame | np.ndarray, attacks: Sequence[str] | None = None, *,
                  method: str = "split", folds: int = 2, n_permutations: int = 199, test: str = "mannwhitney", alpha: float = 0.01,
                  seed: int = 0, C: float = 1.0, nonnegative: bool = True) -> SetInferenceResult:
    """Is the suspect set trained on? Honest aggregation of attack scores, then a one-sided test.

    Args:
        suspect, unseen: per-text attack scores, one row per text (e.g. ``AuditResult.scores``
            rows; ``id``/``label``/``tier``/``kind`` columns are ignored), or arrays (texts x attacks).
            ``unseen`` must be texts known not to be in the training data, from the suspect
            set's distribution (the test is only as valid as that assumption; run
            :mod:`memlens.blind` on the two sets' texts to check it).
        attacks: which columns to combine (default: every numeric column).
        method: "split" (Maini et al.: fit on half, test the other half; parametric p-value) or
            "crossfit" (all texts tested; permutation p-value, ``n_permutations`` reruns).
        folds: cross-fitting folds for "crossfit".
        test: "mannwhitney" (one-sided Mann-Whitney U, the default: exact for any score
            distribution, keeps its power on heavy-tailed scores) or "welch" (one-sided Welch
            t-test, as Maini et al.; more power only with a handful of texts, see the module doc).
        alpha: level at which :attr:`SetInferenceResult.detected` is reported.
        nonnegative: constrain the aggregator's weights to >= 0 (see :class:`NonNegativeLogistic`);
            False is Maini et al.'s free logistic, which detects a shift of either sign.
    """
    if test not in TESTS:
        raise SetInferenceError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    if method not in METHODS:
        raise SetInferenceError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if folds < 2:
        raise SetInferenceError(f"folds must be at least 2 (got {folds})")
    if method == "crossfit" and n_permutations < 1:
        raise SetInferenceError(f"n_permutations must be at least 1 (got {n_permutations})")
    xs, names = _matrix(suspect, attacks, "suspect set")
    xu, _ = _matrix(unseen, names, "unseen set")
    need = 4 if method == "split" else 2 * folds  # two texts per set on each side of every split
    if min(len(xs), len(xu)) < need:
        raise SetInferenceError(f"set inference ({method}) needs at least {need} texts in each set "
                                f"(got {len(xs)} suspect, {len(xu)} unseen)")
    notes = []
    if method == "split":
        s, u, w = split_scores(xs, xu, seed, C, nonnegative)
        stat, p = _test(s, u, test)
    else:
        s, u, w = cross_fit_scores(xs, xu, folds, seed, C, nonnegative)
        stat, _ = _test(s, u, test)
        x = np.vstack([xs, xu])
        rng = np.random.default_rng(seed)
        exceed = 0
        for b in range(n_permutations):
            perm = rng.permutation(len(x))
            ps_, pu_, _ = cross_fit_scores(x[perm[:len(xs)]], x[perm[len(xs):]], folds, seed + 1 + b, C, nonnegative)
            exceed += _test(ps_, pu_, test)[0] >= stat
        p = (1 + exceed) / (1 + n_permutations)
        notes.append(f"permutation p-value from {n_permutations} label shuffles: the smallest possible p is {1 / (1 + n_permutations):.3g}")
    if test == "mannwhitney" and method == "split":
        floor = 1 / math.comb(len(s) + len(u), len(s))  # every suspect score above every unseen one
        if floor >= alpha:
            notes.append(f"with {len(s)} + {len(u)} tested texts the smallest possible Mann-Whitney p-value is {floor:.3g} "
                         f"(not below alpha {alpha:g}): use more texts, the Welch test or the crossfit method")
    if min(len(xs), len(xu)) < 20:
        notes.append(f"only {min(len(xs), len(xu))} texts in the smaller set: the aggregator is fitted on very few texts")
    return SetInferenceResult(p, stat, test, method, alpha, len(xs), len(xu), names, pd.DataFrame(w, columns=names), s, u, notes)


def set_inference_audit(result, attacks: Sequence[str] | None = None, **kwargs) -> SetInferenceResult:
    """:func:`set_inference` of an audit: its members (label 1) as the suspect set, its non-members as the unseen set."""
    df = result.scores
    if "label" not in df.columns or df["label"].isna().any():
        raise SetInferenceError("set inference of an audit needs a label for every text (members 1, known-unseen 0)")
    return set_inference(df[df["label"] == 1], df[df["label"] == 0], attacks, **kwargs)


def default_sizes(n_max: int) -> list[int]:
    """Roughly log-spaced subsample sizes from 10 (or fewer) up to ``n_max``."""
    grid = [10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000]
    sizes = [n for n in grid if n < n_max] + [n_max]
    return sorted({s for s in sizes if s >= 4})


@dataclass
class PValueCurve:
    table: pd.DataFrame  # size, median_p, p25, p75, detect_rate (fraction of draws with p < alpha)
    alpha: float
    n_needed: int | None  # smallest size from which on the median p stays below alpha (None: not reached)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n_needed": self.n_needed, "curve": self.table.to_dict(orient="records")}


@_one_blas_thread
def pvalue_curve(suspect, unseen, attacks: Sequence[str] | None = None, *, sizes: Sequence[int] | None = None, draws: int = 20,
                 alpha: float = 0.01, seed: int = 0, **kwargs) -> PValueCurve:
    """p-value against the number of texts: for each size n, ``draws`` random subsets of n suspect
    and n unseen texts are tested; the median p says how many documents are needed for p < alpha."""
    xs, names = _matrix(suspect, attacks, "suspect set")
    xu, _ = _matrix(unseen, names, "unseen set")
    n_max = min(len(xs), len(xu))
    sizes = default_sizes(n_max) if sizes is None else sorted({int(n) for n in sizes})
    bad = [n for n in sizes if n > n_max or n < 4]
    if bad:
        raise SetInferenceError(f"subsample size {bad[0]} is outside 4..{n_max} (the smaller set's size)")
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        ps = []
        for d in range(draws):
            i = rng.choice(len(xs), n, replace=False)
            j = rng.choice(len(xu), n, replace=False)
            ps.append(set_inference(xs[i], xu[j], names, seed=seed + d, alpha=alpha, **kwargs).p_value)
        ps = np.asarray(ps)
        rows.append({"size": n, "median_p": float(np.median(ps)), "p25": float(np.percentile(ps, 25)),
                     "p75": float(np.percentile(ps, 75)), "detect_rate": float((ps < alpha).mean())})
    table = pd.DataFrame(rows)
    # The smallest size from which on every larger size also has median p < alpha: medians of 20
    # draws wobble, and one lucky size below a failing one would overstate what is enough.
    below = (table["median_p"] < alpha).to_numpy()
    ok_from = [i for i in range(len(below)) if below[i:].all()]
    return PValueCurve(table, alpha, int(table["size"].iloc[ok_from[0]]) if ok_from else None)


@_one_blas_thread
def false_positive_rate(unseen, attacks: Sequence[str] | None = None, *, n_splits: int = 200, size: int | None = None,
                        alpha: float = 0.05, seed: int = 0, **kwargs) -> tuple[float, np.ndarray]:
    """Null check on texts all known to be unseen: split them at random into a fake "suspect"
    and an "unseen" half (``size`` texts each; default half of them), run :func:`set_inference`,
    and return the fraction of splits with p < ``alpha`` (should be about ``alpha``) and the p-values."""
    xu, names = _matrix(unseen, attacks, "unseen set")
    size = len(xu) // 2 if size is None else size
    if 2 * size > len(xu):
        raise SetInferenceError(f"{n_splits} splits of {size} + {size} texts need at least {2 * size} unseen texts (got {len(xu)})")
    rng = np.random.default_rng(seed)
    ps = np.empty(n_splits)
    for k in range(n_splits):
        perm = rng.permutation(len(xu))
        ps[k] = set_inference(xu[perm[:size]], xu[perm[size:2 * size]], names, seed=seed + k, alpha=alpha, **kwargs).p_value
    return float((ps < alpha).mean()), ps


def synthetic_scores(n: int, shift: float = 0.0, n_attacks: int = 3, *, shared: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """Per-text scores of ``n_attacks`` correlated attacks (unit variance; ``shared`` of the
    standard deviation is a per-text factor common to all attacks, as attacks built on one
    model's losses are), every score moved up by ``shift``. With ``shift=d`` each single attack
    has AUC Phi(d / sqrt(2)) (0.6 at d = 0.358). For tests, benchmarks and docs."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(n, 1))
    own = rng.normal(size=(n, n_attacks))
    x = shared * common + np.sqrt(1 - shared**2) * own + shift
    return pd.DataFrame(x, columns=[f"attack{i}" for i in range(n_attacks)])
