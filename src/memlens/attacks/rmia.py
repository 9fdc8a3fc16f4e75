"""RMIA (Zarifzadeh, Liu, Shokri, Lin, ICML 2024) for sequences, offline and online.

Pr(x|theta) is exp(mean_t log p(x_t|x_<t)) ("geometric", the default) or the full sequence
probability ("sum"). LR(x, z) = (Pr(x|theta)/Pr(x)) / (Pr(z|theta)/Pr(z)); score(x) = fraction of
population z with LR(x, z) >= gamma. All in log space: the full sequence probability underflows.

The marginal Pr(x):
* offline (references never trained on x): Pr(x) = ½((1+a)·Pr_OUT(x) + (1−a)), Pr_OUT(x) the
  average over references of Pr(x|theta'_r). a = 1 by default (the RMIA README: "when unknown:
  offline_a = 1"; the paper's 0.3 is its CIFAR-10 value and on language-model probabilities it
  leaves almost nothing of the reference). ``tune_a`` picks a by Privacy Meter's grid search.
* online (references trained with known splits, ``AttackInput.reference_membership``): Pr(x) =
  the average of *all* references' Pr(x|theta'), IN and OUT, as in the paper, whose references are
  trained on random halves of the data so that x is IN for about half of them. No a.
* "average": ``mixture`` = mean of the references' probabilities (RMIA's definition); ``logmean``
  = mean of their log-probabilities (a geometric mean; what the InfoRMIA author's LLM code does).
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.special import logsumexp

from memlens.attacks._offline_a import A_GRID, TuneCase, offline_log_marginal, reference_weight, tune_offline_a
from memlens.attacks.base import AttackError, AttackInput, AttackResult, Param, register
from memlens.attacks.loss import mean64

log = logging.getLogger(__name__)

PROB_CHOICES = ("geometric", "sum")
MODES = ("auto", "offline", "online")
REF_AVERAGES = ("mixture", "logmean")


def log_seq_prob(stats, prob: str) -> float:
    """log Pr(x|model) for one text's statistics."""
    if prob == "geometric":
        return mean64(stats.logprob) if len(stats.logprob) else float("nan")
    if prob == "sum":
        return float(np.sum(stats.logprob, dtype=np.float64))
    raise AttackError(f"prob must be one of {PROB_CHOICES}, got {prob!r}")


def average_log_probs(lp: np.ndarray, how: str = "mixture", use: np.ndarray | None = None) -> np.ndarray:
    """Average of references' log-probabilities [R, n] over the references marked in ``use`` [R, n]
    (all when None): log mean exp (``mixture``) or mean (``logmean``). NaN where none is marked."""
    lp = np.asarray(lp, dtype=np.float64)
    use = np.ones(lp.shape, dtype=bool) if use is None else np.asarray(use, dtype=bool)
    count = use.sum(axis=0)
    out = np.full(lp.shape[1], np.nan)
    ok = count > 0
    if how == "mixture":
        out[ok] = logsumexp(np.where(use, lp, -np.inf)[:, ok], axis=0) - np.log(count[ok])
    elif how == "logmean":
        out[ok] = np.where(use, lp, 0.0)[:, ok].sum(axis=0) / count[ok]
    else:
        raise AttackError(f"average must be one of {REF_AVERAGES}, got {how!r}")
    return out


def log_marginal(ref_log_probs: np.ndarray, a: float, average: str = "mixture") -> np.ndarray:
    """Offline log Pr(x) from reference log-probabilities [R, n], every reference OUT."""
    if not 0.0 <= a <= 1.0:
        raise AttackError(f"a must lie in [0, 1], got {a}")
    return offline_log_marginal(average_log_probs(ref_log_probs, average), a)


def _log_probs(target_stats, references, prob: str) -> tuple[np.ndarray, np.ndarray]:
    lt = np.array([log_seq_prob(s, prob) for s in target_stats], dtype=np.float64)
    lr = np.array([[log_seq_prob(s, prob) for s in ref.stats] for ref in references], dtype=np.float64).reshape(len(references), -1)
    return lt, lr


def log_likelihood_ratios(target_stats, references, prob: str, a: float, average: str = "mixture") -> np.ndarray:
    """log(Pr(x|theta) / Pr(x)) for each text, offline, every reference OUT."""
    lt, lr = _log_probs(target_stats, references, prob)
    return lt - log_marginal(lr, a, average)


RMIA_PARAMS = {
    "a": Param(1.0, "offline scaling of the OUT references' marginal, Pr(x) = ((1+a) Pr_OUT(x) + 1-a) / 2; 1 = no correction"),
    "tune_a": Param(False, "offline: pick a by grid search, attacking each reference with the others (needs reference splits)"),
    "mode": Param("auto", "online: Pr(x) = mean of IN and OUT references (needs reference splits); offline: OUT references "
                          "and a; auto: online when reference splits are given, else offline", MODES),
    "average": Param("mixture", "several references: mean of probabilities (mixture) or of log-probabilities (logmean)", REF_AVERAGES),
    "prob": Param("geometric", "sequence probability: geometric-mean token probability or the full product", PROB_CHOICES),
}


class _Marginals:
    """log(Pr(x|theta)/Pr(x)) for the audited texts and the population, under one setting."""

    def __init__(self, inp: AttackInput, *, a: float, tune_a: bool, mode: str, average: str, prob: str, score=None):
        if not 0.0 <= a <= 1.0:
            raise AttackError(f"a must lie in [0, 1], got {a}")
        if inp.population_target and len(inp.population_references) != len(inp.references):
            raise AttackError("the population must be scored under the same reference models as the audited texts")
        if average not in REF_AVERAGES:
            raise AttackError(f"average must be one of {REF_AVERAGES}, got {average!r}")
        splits = inp.reference_membership
        if mode == "auto":
            mode = "offline" if splits is None or tune_a else "online"
        if mode == "online" and splits is None:
            raise AttackError("online RMIA needs reference models with known splits (which reference trained on which text)")
        if tune_a and mode == "online":
            raise AttackError("tune_a tunes the offline constant a: use mode=offline (or auto)")
        self.info: dict = {"mode": mode, "average": average}
        self.notes: list[str] = []
        lt, lr = _log_probs(inp.target, inp.references, prob)
        pt, pr = _log_probs(inp.population_target, inp.population_references, prob) if inp.population_target else (None, None)
        pop_splits = inp.population_reference_membership
        if pr is not None and pop_splits is None:
            pop_splits = None if splits is None else np.zeros(pr.shape, dtype=bool)  # population: OUT for every reference
        if tune_a:
            a = self._tune(lr, splits, pr, pop_splits, average, score)
        self.a = a
        if mode == "online":
            self.x = lt - average_log_probs(lr, average)
            self.z = None if pr is None else pt - average_log_probs(pr, average)
            self.info["in_references_per_text"] = float(splits.sum(axis=0).mean())
            if a != 1.0:
                self.notes.append(f"a={a:g} is not used online (IN references measure Pr_IN directly); mode=offline uses it")
        else:
            self.info["a"] = a
            self.x, wx = self._offline(lt, lr, splits, a, average, "audited")
            self.z = None if pr is None else self._offline(pt, pr, pop_splits, a, average, "population")[0]
            # per text: the median over every text, and its warning, come in finish_marginals (after all chunks)
            self.info["_reference_weights"] = wx
            if prob == "sum" and a < 1.0:
                self._warn(f"prob=sum with a={a:g} < 1: a full-sequence probability is so small that Pr(x) ≈ (1-a)/2, the "
                           "reference drops out and the attack ranks texts by their total log-likelihood; use a=1 or prob=geometric")
        if self.notes:
            self.info["note"] = "; ".join(self.notes)

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        self.info["warning"] = msg


    def _offline(self, lt, lr, splits, a, average, what) -> tuple[np.ndarray, np.ndarray]:
        out = None if splits is None else ~splits
        lout = average_log_probs(lr, average, out)
        none_out = np.isnan(lout)
        if none_out.any():
            # No OUT reference for these texts: fall back to the online marginal (mean of all references).
            lout[none_out] = average_log_probs(lr[:, none_out], average)
            ratio = lt - offline_log_marginal(lout, a)
            ratio[none_out] = lt[none_out] - lout[none_out]
            self.notes.append(f"{int(none_out.sum())} {what} text(s) had no OUT reference: their Pr(x) is the online mean")
            return ratio, reference_weight(lout[~none_out], a)
        return lt - offline_log_marginal(lout, a), reference_weight(lout, a)

    def _tune(self, lr, splits, pr, pop_splits, average, score) -> float:
        if splits is None or lr.shape[0] < 2:
            raise AttackError("tune_a needs at least two reference models with known splits (one is attacked with the others)")
        cases = []
        for r in range(lr.shape[0]):
            others = np.arange(lr.shape[0]) != r
            out_lp = average_log_probs(lr[others], average, ~splits[others])
            keep = ~np.isnan(out_lp)
            case = TuneCase(lr[r, keep], splits[r, keep], out_lp[keep])
            if pr is not None:
                pout = average_log_probs(pr[others], average, ~pop_splits[others])
                pkeep = ~np.isnan(pout)
                case.pop_target_lp, case.pop_out_lp = pr[r, pkeep], pout[pkeep]
            cases.append(case)
        kwargs = {} if score is None else {"score": score}
        a, aucs = tune_offline_a(cases, **kwargs)
        self.info["tuned_a"] = a
        self.info["tune_auc"] = {f"{g:.1f}": float(v) for g, v in zip(A_GRID, aucs)}
        return a


def finish_marginals(info: dict) -> dict:
    """rmia/informia's info once every text is scored: the median weight of the reference in log Pr(x) over
    the texts (offline), and a warning when it is below one half."""
    wx = info.pop("_reference_weights", None)
    if wx is None:
        return info
    wx = np.asarray(wx, dtype=np.float64)
    info["reference_weight_median"] = float(np.median(wx)) if wx.size else float("nan")
    if "warning" not in info and wx.size and np.median(wx) < 0.5:
        msg = (f"a={info.get('a', 1.0):g}: the reference makes up only {np.median(wx):.0%} of log Pr(x) (median over texts); "
               "the attack is close to the loss attack; use a=1 unless a was tuned")
        log.warning(msg)
        info["warning"] = msg
    return info


def per_text_unless_tuned(params: dict) -> bool:
    """tune_a fits a on the audited texts' reference splits: then the attack needs every text at once."""
    return not params.get("tune_a")


def rmia_counts(x: np.ndarray, z: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Fraction of population log-ratios z with LR(x, z) >= gamma, for each log-ratio in x."""
    zs = np.sort(np.asarray(z, dtype=np.float64))
    # LR(x,z) >= gamma  <=>  log ratio(z) <= log ratio(x) - log gamma
    return np.searchsorted(zs, np.asarray(x, dtype=np.float64) - np.log(gamma), side="right") / len(zs)


@register(
    "rmia",
    description="Fraction of population texts z with LR(x, z) >= gamma (RMIA; online with reference splits).",
    params={**RMIA_PARAMS, "gamma": Param(1.0, "likelihood-ratio threshold gamma")},
    needs_reference=True,
    needs_population=True,
    per_text=per_text_unless_tuned,
    finish=finish_marginals,
)
def rmia(inp: AttackInput, a: float, tune_a: bool, mode: str, average: str, prob: str, gamma: float) -> AttackResult:
    if gamma <= 0:
        raise AttackError(f"gamma must be positive, got {gamma}")

    def score(x, z):
        return x if z is None or len(z) == 0 else rmia_counts(x, z, gamma)

    m = _Marginals(inp, a=a, tune_a=tune_a, mode=mode, average=average, prob=prob, score=score)
    return AttackResult(rmia_counts(m.x, m.z, gamma), info={"population_size": len(m.z), **m.info})
