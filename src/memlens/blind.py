"""Blind baseline: can the member and non-member sets be told apart without the model?

A membership AUC only measures memorization when members and non-members come from one
distribution. Das, Zhang & Tramèr ("Blind Baselines Beat Membership Inference Attacks for
Foundation Models", 2024) showed that on several published LLM benchmarks a classifier that
never sees the model (bag of n-grams, dates) separates the two sets better than every attack:
those benchmarks measure a distribution shift, not memorization.

:func:`blind_baseline` trains such a model-free classifier on the texts alone (character n-gram
TF-IDF plus a few length / number / date / digit-share features, logistic regression) and scores
every text with a model that never saw it (stratified K-fold, out-of-fold probabilities). The
scores go through :func:`memlens.metrics.evaluate`, so the blind AUC and TPR are comparable to
the attacks'. :func:`shifted_pair` builds a deliberately shifted member / non-member pair from the
testbed's generators (memlens.testbed.shifted: non-members of other document kinds) on which the check
must trip.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memlens.errors import BlindError  # noqa: F401  (raised here; defined with the other user errors)
from memlens.metrics import AttackMetrics, evaluate

#: A blind AUC at or above this says the two sets differ (the issue's threshold; Das et al.'s blind
#: baselines reach far more, up to about 0.99, on the benchmarks they debunk, while
#: same-distribution sets sit at 0.5 up to sampling noise).
DEFAULT_THRESHOLD = 0.6
DEFAULT_MAX_TEXTS = 1000  # texts the blind check samples from a larger audit (both classes balanced)
DEFAULT_FOLDS = 5

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Dates as people write them: 2024-06-01, 06/01/2024, 6/1/24, June 1, 2024, 1 June 2024.
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_DATE = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    rf"|\b{_MONTH}\s+\d{{1,2}},?\s+\d{{4}}\b|\b\d{{1,2}}\s+{_MONTH}\s+\d{{4}}\b"
)


def text_features(texts: Sequence[str]) -> np.ndarray:
    """Hand-made features per text: log length (characters, words, lines), digit, upper-case and
    punctuation shares, count of numbers and dates, and the mean / latest year mentioned (0 when
    none; with a "has a year" flag). These catch the shifts TF-IDF weighs poorly: length
    differences and dates (the temporal shift of WikiMIA-style benchmarks)."""
    rows = []
    for t in texts:
        n = max(len(t), 1)
        years = [int(y) for y in _YEAR.findall(t)]
        rows.append([
            np.log1p(len(t)), np.log1p(len(t.split())), np.log1p(t.count("\n")),
            sum(c.isdigit() for c in t) / n, sum(c.isupper() for c in t) / n,
            sum(not c.isalnum() and not c.isspace() for c in t) / n,
            np.log1p(len(_NUMBER.findall(t))), np.log1p(len(_DATE.findall(t))),
            float(bool(years)), float(np.mean(years)) - 2000 if years else 0.0, float(max(years)) - 2000 if years else 0.0,
        ])
    return np.asarray(rows, dtype=np.float64)


def make_classifier(seed: int = 0):
    """The blind classifier: char 1-4-gram TF-IDF (within word boundaries, sublinear tf) next to
    the standardized :func:`text_features`, into an L2 logistic regression. A fresh pipeline per
    fold, so the TF-IDF vocabulary and scaler are fitted on training folds only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    features = FeatureUnion([
        ("ngrams", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2, max_features=50_000)),
        ("stats", make_pipeline(FunctionTransformer(text_features), StandardScaler())),
    ])
    return make_pipeline(features, LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def cross_val_scores(texts: Sequence[str], labels: Sequence[int], *, folds: int = DEFAULT_FOLDS, repeats: int = 1,
                     seed: int = 0) -> tuple[np.ndarray, int]:
    """Out-of-fold member probabilities: each text is scored by classifiers that never saw it.

    ``repeats`` > 1 averages the out-of-fold probabilities over differently shuffled fold splits
    (still honest, less split noise). Returns the scores and the number of folds used, which is
    ``folds`` capped by the smaller class (stratified folds need one text of each class per fold).
    """
    from sklearn.model_selection import StratifiedKFold

    texts = list(texts)
    y = np.asarray(labels)
    if len(texts) != len(y):
        raise BlindError(f"{len(texts)} texts but {len(y)} labels")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise BlindError("the blind baseline needs both members (label 1) and non-members (label 0)")
    smaller = int(min((y == 1).sum(), (y == 0).sum()))
    if smaller < 2:
        raise BlindError(f"the blind baseline needs at least 2 members and 2 non-members to cross-validate (got {smaller} of one class)")
    if folds < 2:
        raise BlindError(f"folds must be at least 2 (got {folds})")
    k = min(folds, smaller)
    arr = np.asarray(texts, dtype=object)
    out = np.zeros(len(texts))
    for r in range(repeats):
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
        for train, test in cv.split(arr, y):
            clf = make_classifier(seed).fit(arr[train], y[train])
            out[test] += clf.predict_proba(arr[test])[:, 1]
    return out / repeats, k


@dataclass
class BlindResult:
    metrics: AttackMetrics
    scores: np.ndarray  # out-of-fold member probability per text, in input order
    folds: int
    verdict: str  # "differ", "inconclusive" or "ok"
    warning: str | None  # one line for the CLI, results.json and the report; None when "ok"
    best_attack: str | None = None
    best_attack_auc: float | None = None
    threshold: float = DEFAULT_THRESHOLD

    @property
    def sets_differ(self) -> bool:
        return self.verdict == "differ"

    def to_dict(self) -> dict[str, Any]:
        return {"method": "blind baseline (char n-gram TF-IDF + length/number/date features, logistic regression, "
                          f"{self.folds}-fold out-of-fold)",
                "metrics": self.metrics.to_dict(), "folds": self.folds, "threshold": self.threshold,
                "verdict": self.verdict, "sets_differ": self.sets_differ, "warning": self.warning,
                "best_attack": self.best_attack, "best_attack_auc": self.best_attack_auc}


def judge(metrics: AttackMetrics, attack_aucs: Mapping[str, float] | None = None,
          threshold: float = DEFAULT_THRESHOLD) -> tuple[str, str | None, str | None, float | None]:
    """Verdict from the blind metrics and the attacks' AUCs: (verdict, warning, best attack, its AUC).

    "differ": the blind AUC reaches ``threshold`` or is at least the best attack's, and its 95%
    interval excludes 0.5. The interval guard keeps chance from raising the alarm: with 48 vs 48
    texts an AUC of 0.6 arises by chance about 5% of the time, and a blind 0.53 "beating" an attack
    at 0.52 says only that both are at chance. "inconclusive": one of the two conditions holds but
    the interval includes 0.5 (too few texts to tell). "ok": neither holds.
    """
    auc = metrics.auc
    best, best_auc = None, None
    if attack_aucs:
        best, best_auc = max(((k, float(v)) for k, v in attack_aucs.items() if v is not None and np.isfinite(v)),
                             key=lambda kv: kv[1], default=(None, None))
    high = auc >= threshold
    beats = best_auc is not None and auc >= best_auc
    above_chance = metrics.auc_ci is not None and metrics.auc_ci[0] > 0.5
    if not (high or beats):
        return "ok", None, best, best_auc
    ci = f" (95% CI {metrics.auc_ci[0]:.2f}-{metrics.auc_ci[1]:.2f})" if metrics.auc_ci else ""
    why = f"AUC {auc:.3f}{ci}" + (f", best attack {best} {best_auc:.3f}" if best_auc is not None else "")
    if above_chance:
        warning = (f"WARNING: members and non-members differ without the model: a model-free blind classifier reaches {why}; "
                   "the attack numbers cannot be read as memorization")
        return "differ", warning, best, best_auc
    warning = (f"Note: a model-free blind classifier reaches {why}, but too few texts to tell the sets apart from chance; "
               "read the attack numbers with care")
    return "inconclusive", warning, best, best_auc


def blind_baseline(texts: Sequence[str], labels: Sequence[int], attack_aucs: Mapping[str, float] | None = None, *,
                   folds: int = DEFAULT_FOLDS, repeats: int = 1, threshold: float = DEFAULT_THRESHOLD, seed: int = 0,
                   n_bootstrap: int = 1000, max_texts: int | None = DEFAULT_MAX_TEXTS) -> BlindResult:
    """Model-free check of a labelled audit set; see the module docstring.

    Args:
        texts, labels: the audited texts and their labels (1 member, 0 non-member).
        attack_aucs: attack name -> AUC of the audit (e.g. ``{a: m.auc for a, m in result.metrics.items()}``);
            the verdict also fires when the blind AUC is at least the best of them.
        folds: stratified folds (capped by the smaller class; at least 2 texts per class needed).
        repeats: fold shuffles averaged (each still out-of-fold).
        max_texts: above this many texts, the check runs on a seeded sample of at most ``max_texts // 2``
            texts per class (the others get a NaN score): the verdict needs a few thousand texts, not all
            of a large audit (TF-IDF cross-validation on 20,000 texts takes minutes on a CPU). None: all.
    """
    job = BlindJob(texts, labels, folds=folds, repeats=repeats, seed=seed, max_texts=max_texts, background=False)
    return job.result(attack_aucs, threshold=threshold, n_bootstrap=n_bootstrap)


def _sample(labels: np.ndarray, max_texts: int | None, seed: int) -> np.ndarray:
    """Indices the check runs on: all, or a seeded sample of at most ``max_texts // 2`` per class."""
    keep = np.arange(len(labels))
    if max_texts is not None and len(labels) > max_texts:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: max_texts // 2] for c in (0, 1)]))
    return keep


class BlindJob:
    """The model-free part of the blind baseline (the cross-validated classifier, which needs only the
    texts and labels), started as soon as they are known: ``memlens.audit`` starts it before the
    statistics pass and collects it after the attacks (:meth:`result`), so it costs no wall time of its own.

    ``background``: in a separate Python process (``python -m memlens._blind_worker``), not a thread:
    TF-IDF and scikit-learn hold the GIL, which the pass's many small torch calls on the main thread
    need (a thread would stall the pass about as long as it runs). ``cache_dir``: the out-of-fold
    scores are kept there under a hash of the texts, labels, settings and scikit-learn version, so a
    rerun on the same sets (``memlens attack`` with other attack parameters) reads them back.
    A worker that cannot start or fails for another reason than a BlindError is run again here."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], *, folds: int = DEFAULT_FOLDS, repeats: int = 1, seed: int = 0,
                 max_texts: int | None = DEFAULT_MAX_TEXTS, cache_dir: Any = None, background: bool = True):
        import time

        self.t0 = time.perf_counter()
        self.labels = np.asarray(labels)
        self.keep = _sample(self.labels, max_texts, seed)
        self.texts = [texts[i] for i in self.keep]
        self.folds, self.repeats, self.seed = folds, repeats, seed
        self.seconds: float | None = None  # the job's own wall time, from its start to its end
        self.cached = False
        self._proc: Any = None
        self._path = None if cache_dir is None else _cache_path(cache_dir, self.texts, self.labels[self.keep], folds, repeats, seed)
        self._done: tuple[np.ndarray, int] | BaseException | None = None
        if self._path is not None and self._path.is_file():
            try:
                d = json.loads(self._path.read_text())
                self._done, self.cached = (np.asarray(d["scores"], dtype=np.float64), int(d["folds"])), True
                self.seconds = time.perf_counter() - self.t0
                return
            except (ValueError, KeyError, OSError):  # a damaged entry: computed again
                self._done = None
        if background:
            self._start()

    def _start(self) -> None:
        import pickle
        import subprocess

        from memlens._io import worker_process

        try:
            # one BLAS/OpenMP thread: the classifier is sparse and mostly single-threaded Python, and idle BLAS
            # threads spinning on every core slowed the GPU pass's host loop beside it (H200: pass 35.0 s with the
            # blind worker, 28.4 s without; memlens._blind_worker also lowers its priority)
            self._proc = worker_process("memlens._blind_worker", stderr=subprocess.PIPE,
                                        env={v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
            # a pipe's buffer is small: the texts go in on a thread, so a large set does not block the caller
            import threading

            payload = pickle.dumps((self.texts, self.labels[self.keep], self.folds, self.repeats, self.seed))
            self._feeder = threading.Thread(target=_feed, args=(self._proc, payload), daemon=True)
            self._feeder.start()
        except OSError:
            self._proc = None

    def scores(self) -> tuple[np.ndarray, int]:
        """(out-of-fold scores of the sampled texts, folds used); waits for the worker. Raises BlindError."""
        import pickle
        import time

        if self._done is None and self._proc is not None:
            self._feeder.join()  # the worker reads all of its input before it writes anything
            self._proc.stdin = None  # closed by the feeder: communicate() must not touch it
            out, err = self._proc.communicate()
            try:
                status, value = pickle.loads(out) if self._proc.returncode == 0 else (None, None)
                self._done = value if status == "ok" else BlindError(value) if status == "error" else None
            except Exception:  # no or broken output: run here below
                self._done = None
            if self._done is None:
                import logging

                logging.getLogger("memlens").warning("blind baseline worker failed (%s); running it here",
                                                     (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1])
        if self._done is None:
            try:
                self._done = cross_val_scores(self.texts, self.labels[self.keep], folds=self.folds, repeats=self.repeats, seed=self.seed)
            except BlindError as e:
                self._done = e
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.t0
        if isinstance(self._done, BaseException):
            raise self._done
        if self._path is not None and not self.cached:
            from memlens._io import atomic_write

            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self._path, json.dumps({"scores": self._done[0].tolist(), "folds": self._done[1]}))
                self.cached = True
            except OSError:  # a read-only cache: the result is only not kept
                pass
        return self._done

    def result(self, attack_aucs: Mapping[str, float] | None = None, *, threshold: float = DEFAULT_THRESHOLD,
               n_bootstrap: int = 1000) -> BlindResult:
        sub_scores, k = self.scores()
        labels, keep, folds, seed = self.labels, self.keep, self.folds, self.seed
        return _finish(labels, keep, sub_scores, k, folds, seed, attack_aucs, threshold, n_bootstrap)

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._feeder.join()
            self._proc.stdin = None
            self._proc.communicate()


def _feed(proc: Any, payload: bytes) -> None:
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:  # the worker died; scores() runs the check here
        pass


def _cache_path(cache_dir: Any, texts: Sequence[str], labels: np.ndarray, folds: int, repeats: int, seed: int):
    import hashlib
    from importlib.metadata import version
    from pathlib import Path

    h = hashlib.sha256()
    h.update(repr(("blind-v1", version("scikit-learn"), folds, repeats, seed, labels.astype(int).tolist())).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    from memlens.cache import BLIND_DIR

    return Path(cache_dir) / BLIND_DIR / f"{h.hexdigest()[:32]}.json"


def _finish(labels, keep, sub_scores, k, folds, seed, attack_aucs, threshold, n_bootstrap) -> BlindResult:
    m = evaluate(labels[keep], sub_scores, n_bootstrap=n_bootstrap, seed=seed)
    scores = np.full(len(labels), np.nan)
    scores[keep] = sub_scores
    if len(keep) < len(labels):
        m.notes.append(f"blind baseline on a seeded sample of {len(keep)} of the {len(labels)} texts (max_texts)")
    if k < folds:
        m.notes.append(f"blind baseline used {k} folds instead of {folds}: the smaller class has only {k} texts")
    verdict, warning, best, best_auc = judge(m, attack_aucs, threshold)
    return BlindResult(m, scores, k, verdict, warning, best, best_auc, threshold)


def blind_audit(result, **kwargs) -> BlindResult:
    """:func:`blind_baseline` of an :class:`memlens.audit.AuditResult` (labelled texts, its attacks' AUCs)."""
    labels = [s.label for s in result.samples]
    if any(v is None for v in labels):
        raise BlindError("the blind baseline needs labels for every text")
    return blind_baseline([s.text for s in result.samples], labels, {a: m.auc for a, m in result.metrics.items()}, **kwargs)


def start_blind(samples, options: Mapping[str, Any], cache_dir: Any = None) -> BlindJob | None:
    """A :class:`BlindJob` on labelled samples (``options``: those of :func:`attach_blind`), running in the
    background; None where :func:`attach_blind` would not run the check (labels missing or of one class)."""
    labels = [s.label for s in samples]
    if any(v is None for v in labels) or set(labels) != {0, 1}:
        return None
    kw = {k: options[k] for k in ("folds", "repeats", "seed", "max_texts") if k in options}
    return BlindJob([s.text for s in samples], labels, cache_dir=cache_dir, **kw)


def attach_blind(result, job: BlindJob | None = None, **kwargs) -> BlindResult | None:
    """Run the blind check on a labelled audit and record it on ``result`` (what ``memlens.audit``
    does by default): ``result.extra["blind"]`` gets :meth:`BlindResult.to_dict`, and a warning goes
    first into ``result.notes`` so every output shows it before anything else. Unlabelled audits
    (no metrics) are left alone; too few texts to cross-validate becomes a note, not an error:
    the attacks' numbers are still worth having."""
    labels = [s.label for s in result.samples]
    if not result.metrics or any(v is None for v in labels) or set(labels) != {0, 1}:
        return None
    try:
        if job is not None:  # started earlier (start_blind) on the same samples: its scores, judged against these attacks
            b = job.result({a: m.auc for a, m in result.metrics.items()}, threshold=kwargs.get("threshold", DEFAULT_THRESHOLD),
                           n_bootstrap=kwargs.get("n_bootstrap", 1000))
        else:
            b = blind_audit(result, **kwargs)
    except BlindError as e:
        result.notes.append(f"blind baseline skipped: {e}")
        return None
    result.extra["blind"] = b.to_dict()
    if b.warning:
        result.notes.insert(0, b.warning)
    return b
