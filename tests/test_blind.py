"""Blind baseline: model-free separability of members and non-members."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from memlens.blind import (
    BlindError,
    BlindJob,
    blind_audit,
    blind_baseline,
    cross_val_scores,
    judge,
    text_features,
)
from memlens.data import Sample, load_samples
from memlens.metrics import AttackMetrics
from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
from memlens.testbed.shifted import shifted_pair, write_shifted_pair


def _texts_labels(members, nonmembers):
    return [r["text"] for r in members + nonmembers], [1] * len(members) + [0] * len(nonmembers)


def test_testbed_quick_members_vs_nonmembers_is_near_chance(tmp_path):
    # The testbed splits one pool of profiles at random, so nothing but memorization separates
    # its members from its non-members: the blind classifier must be at chance.
    paths = build_testbed(tmp_path, TestbedConfig.quick())
    texts, labels = _texts_labels(read_jsonl(paths.members), read_jsonl(paths.nonmembers))
    r = blind_baseline(texts, labels, n_bootstrap=300)
    lo, hi = r.metrics.auc_ci
    assert abs(r.metrics.auc - 0.5) < 0.1
    assert lo < r.metrics.auc < hi and lo < 0.5 < hi
    assert 0.05 < hi - lo < 0.4  # 48 vs 48 texts: an interval of roughly +-0.1
    assert r.verdict == "ok" and r.warning is None and not r.sets_differ
    assert r.folds == 5 and r.scores.shape == (96,)


def test_shifted_pair_trips_the_check():
    members, nonmembers = shifted_pair(48)
    assert {r["kind"] for r in members}.isdisjoint({r["kind"] for r in nonmembers})
    texts, labels = _texts_labels(members, nonmembers)
    r = blind_baseline(texts, labels, {"loss": 0.7, "informia": 0.8}, n_bootstrap=300)
    assert r.metrics.auc >= 0.9
    assert r.verdict == "differ" and r.sets_differ
    assert r.best_attack == "informia" and r.best_attack_auc == 0.8
    assert r.warning.startswith("WARNING") and "cannot be read as memorization" in r.warning and "\n" not in r.warning
    d = r.to_dict()
    assert d["sets_differ"] is True and d["metrics"]["auc"] == r.metrics.auc


def test_shifted_pair_is_reproducible_and_written_as_audit_input(tmp_path):
    assert shifted_pair(6, seed=3) == shifted_pair(6, seed=3)
    assert shifted_pair(6, seed=3) != shifted_pair(6, seed=4)
    mpath, npath = write_shifted_pair(tmp_path, 6)
    mem, non = load_samples(mpath), load_samples(npath)
    assert [s.label for s in mem] == [1] * 6 and [s.label for s in non] == [0] * 6
    for s in mem + non:  # PII spans stay exact
        assert all(s.text[p["start"]:p["end"]] == p["value"] for p in s.meta["pii"])
    with pytest.raises(BlindError, match="unknown shift"):
        shifted_pair(6, "topic")


def _metrics(auc, ci):
    return AttackMetrics(auc, ci, {}, {}, 50, 50)


def test_verdict_rules():
    # High and clearly above chance: differ.
    assert judge(_metrics(0.65, (0.55, 0.75)))[0] == "differ"
    # Below the threshold but at least the best attack, and above chance: differ, names the attack.
    verdict, warning, best, best_auc = judge(_metrics(0.58, (0.52, 0.64)), {"loss": 0.55, "mink": 0.57})
    assert (verdict, best, best_auc) == ("differ", "mink", 0.57) and "mink 0.570" in warning
    # Same numbers but an interval that includes 0.5: too few texts to say.
    verdict, warning, *_ = judge(_metrics(0.62, (0.45, 0.78)))
    assert verdict == "inconclusive" and warning.startswith("Note")
    # Below the threshold and below the attacks: fine.
    assert judge(_metrics(0.55, (0.51, 0.6)), {"loss": 0.8}) == ("ok", None, "loss", 0.8)
    assert judge(_metrics(0.5, (0.4, 0.6)))[:2] == ("ok", None)
    # Attacks without a finite AUC are ignored.
    assert judge(_metrics(0.55, (0.51, 0.6)), {"x": float("nan")})[0] == "ok"


def test_tiny_inputs_use_fewer_folds_or_refuse():
    texts = ["alpha beta 1", "alpha beta 2", "alpha beta 3", "gamma delta 4", "gamma delta 5", "gamma delta 6"]
    r = blind_baseline(texts, [1, 1, 1, 0, 0, 0], folds=5, n_bootstrap=50)
    assert r.folds == 3 and any("3 folds instead of 5" in n for n in r.metrics.notes)
    assert r.metrics.auc == 1.0  # two word families: separable even out of fold
    with pytest.raises(BlindError, match="at least 2 members and 2 non-members"):
        blind_baseline(texts[:4], [1, 0, 0, 0])
    with pytest.raises(BlindError, match="both members"):
        blind_baseline(texts, [1] * 6)
    with pytest.raises(BlindError, match="6 texts but 5 labels"):
        cross_val_scores(texts, [1, 1, 0, 0, 0])
    with pytest.raises(BlindError, match="folds must be"):
        cross_val_scores(texts, [1, 1, 1, 0, 0, 0], folds=1)


def test_scores_are_out_of_fold():
    # Unique random strings with random labels: a classifier scored on its own training texts
    # separates them perfectly (it memorizes them); out-of-fold scores must not.
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefghij"), 30)) for _ in range(60)]
    labels = rng.permutation([1] * 30 + [0] * 30)
    scores, _ = cross_val_scores(texts, labels, folds=5)
    from sklearn.metrics import roc_auc_score

    from memlens.blind import make_classifier

    in_sample = make_classifier().fit(np.asarray(texts, dtype=object), labels).predict_proba(np.asarray(texts, dtype=object))[:, 1]
    assert roc_auc_score(labels, in_sample) > 0.95
    assert abs(roc_auc_score(labels, scores) - 0.5) < 0.2


def test_text_features_by_hand():
    f = text_features(["Born 1990-05-01, moved in 2010.\nok", "no digits here"])
    assert f.shape == (2, 11)
    t = "Born 1990-05-01, moved in 2010.\nok"
    assert f[0, 0] == pytest.approx(np.log1p(len(t)))
    assert f[0, 2] == pytest.approx(np.log1p(1))  # one newline
    assert f[0, 3] == pytest.approx(12 / len(t))  # digits: 19900501 + 2010
    assert f[0, 7] == pytest.approx(np.log1p(1))  # one date (ISO)
    assert f[0, 8:].tolist() == [1.0, 0.0, 10.0]  # has a year, mean (1990+2010)/2 - 2000, latest 2010 - 2000
    assert f[1, 3] == 0 and f[1, 8:].tolist() == [0.0, 0.0, 0.0]


def test_blind_audit_takes_texts_labels_and_attack_aucs_from_a_result():
    members, nonmembers = shifted_pair(12)
    samples = [Sample(r["id"], r["text"], r["label"]) for r in members + nonmembers]
    result = SimpleNamespace(samples=samples, metrics={"loss": _metrics(0.97, None)})
    r = blind_audit(result, n_bootstrap=100)
    assert r.best_attack == "loss" and r.metrics.n_members == 12
    result.samples[0].label = None
    with pytest.raises(BlindError, match="labels"):
        blind_audit(result)


def test_large_audits_are_checked_on_a_balanced_seeded_sample():
    members, nonmembers = shifted_pair(30)
    texts, labels = _texts_labels(members, nonmembers)
    r = blind_baseline(texts, labels, max_texts=24, folds=3, n_bootstrap=50)
    scored = ~np.isnan(r.scores)
    assert scored.sum() == 24 and np.asarray(labels)[scored].sum() == 12  # 12 per class
    assert any("sample of 24 of the 60 texts" in n for n in r.metrics.notes)
    again = blind_baseline(texts, labels, max_texts=24, folds=3, n_bootstrap=50)
    assert np.array_equal(scored, ~np.isnan(again.scores))  # seeded


def test_background_job_gives_the_inline_result_and_keeps_it_in_the_cache(tmp_path):
    """The classifier in its own process (what memlens.audit starts before the pass) gives the very scores
    of the inline check; a second job on the same texts and labels reads them from the cache."""
    members, nonmembers = shifted_pair(20)
    texts, labels = _texts_labels(members, nonmembers)
    inline = blind_baseline(texts, labels, folds=3, max_texts=30, n_bootstrap=50, attack_aucs={"loss": 0.7})
    job = BlindJob(texts, labels, folds=3, max_texts=30, cache_dir=tmp_path)
    assert job._proc is not None  # a worker process, not this one
    got = job.result({"loss": 0.7}, n_bootstrap=50)
    np.testing.assert_array_equal(got.scores, inline.scores)
    assert (got.verdict, got.metrics.auc, got.folds) == (inline.verdict, inline.metrics.auc, inline.folds)
    assert job.seconds > 0 and len(list((tmp_path / "blind").glob("*.json"))) == 1
    again = BlindJob(texts, labels, folds=3, max_texts=30, cache_dir=tmp_path)
    assert again.cached and again._proc is None
    np.testing.assert_array_equal(again.result(n_bootstrap=50).scores, inline.scores)
    other = BlindJob(texts, labels[::-1], folds=3, max_texts=30, cache_dir=tmp_path)  # other labels: not the cached entry
    assert not other.cached
    other.cancel()


def test_the_background_worker_runs_on_one_blas_thread_at_a_lower_priority(monkeypatch):
    """Idle BLAS threads of the worker spinning on every core slowed a GPU pass beside it: the worker gets one
    BLAS/OpenMP thread, and lowers its own priority (checked in the worker: it reports its niceness)."""
    import subprocess

    seen = {}
    real = subprocess.Popen

    def spy(argv, *a, **kw):
        if "memlens._blind_worker" in argv:
            seen.update(kw["env"])
        return real(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    members, nonmembers = shifted_pair(10)
    texts, labels = _texts_labels(members, nonmembers)
    job = BlindJob(texts, labels, folds=2)
    job.scores()
    assert {seen[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} == {"1"}
    out = subprocess.run([__import__("sys").executable, "-c", "import os, memlens._blind_worker as w; "
                          "w._lower_priority(); print(os.nice(0))"], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 10


def test_background_job_reports_the_blind_error_of_its_worker():
    job = BlindJob(["a b c", "d e f", "g h i", "j k l"], [1, 0, 0, 0])
    with pytest.raises(BlindError, match="at least 2 members"):
        job.scores()
