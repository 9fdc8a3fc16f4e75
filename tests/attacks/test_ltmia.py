"""LT-MIA: the paired reduction, features from the statistics pass only, the classifier and its
safe persistence, the attack, and a tiny end-to-end run (generate -> train -> beat `loss` on
held-out runs) that fits the CI budget."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import memlens.attacks.ltmia  # noqa: F401  (registers "ltmia" until memlens.attacks imports it)
from memlens.attacks import (
    AttackError,
    AttackInput,
    ReferenceView,
    TokenComparison,
    get_attack,
)
from memlens.ltmia import (
    ClassifierError,
    FeatureError,
    FeatureSpec,
    LTMIAClassifier,
    feature_names,
    input_features,
    load_classifier,
)
from memlens.ltmia.features import PAIR_EXTRAS_KEY
from memlens.models.causal import CausalScorer
from memlens.models.reductions import PAIR_REDUCTIONS, pair_reductions
from memlens.stats import ltmia_pair_dim

TEXTS = [
    "Amber stone by the river, code 101.",
    "The willow and the cedar and the quarry falcon went to the meadow! Next line.",
    "Copper harbor lantern and the velvet canyon, code 512.",
]


# ---------------------------------------------------------------------------------------------
# The paired reduction against a direct transcription of the authors' definitions
# ---------------------------------------------------------------------------------------------
def _naive(a: np.ndarray, b: np.ndarray, tgt: np.ndarray, k: int) -> np.ndarray:
    n, v = a.shape
    lv = math.log(v + 1)

    def lrank(row, value):  # 1 + number of strictly larger entries, log-scaled
        return math.log1p(1 + int((row > value).sum())) / lv

    out = []
    for i in range(n):
        ga, gb = a[i, tgt[i]], b[i, tgt[i]]
        m = max(ga, gb)
        row = [ga - m, gb - m, lrank(a[i], ga), lrank(b[i], gb)]
        top = np.argsort(-a[i], kind="stable")[:k]
        bot = np.argsort(a[i], kind="stable")[:k]
        rtop = np.argsort(-b[i], kind="stable")[:k]
        for j in range(k):
            m = max(a[i, top[j]], b[i, top[j]])
            row += [a[i, top[j]] - m, b[i, top[j]] - m, lrank(b[i], b[i, top[j]]), lrank(a[i], a[i, rtop[j]])]
        for j in range(k):
            m = max(a[i, bot[j]], b[i, bot[j]])
            row += [a[i, bot[j]] - m, b[i, bot[j]] - m, lrank(b[i], b[i, bot[j]])]
        out.append(row)
    return np.array(out)


@pytest.mark.parametrize("space", ["logprob", "logit"])
def test_pair_reduction_matches_definition(space):
    assert "ltmia" in PAIR_REDUCTIONS
    g = torch.Generator().manual_seed(0)
    lt, lr = torch.randn(6, 50, generator=g) * 3, torch.randn(6, 50, generator=g) * 3 + 1.0
    tgt = torch.randint(0, 50, (6,), generator=g)
    k = 5
    out = pair_reductions(lt, lr, tgt, ("informia", "ltmia"), ltmia_k=k, ltmia_space=space)
    assert set(out) == {"kl_ref_target", "log_ratio", "ltmia"}
    got = out["ltmia"].numpy()
    assert got.shape == (6, ltmia_pair_dim(k))
    if space == "logit":
        a, b = lt.numpy(), lr.numpy()
    else:
        a, b = torch.log_softmax(lt, -1).numpy(), torch.log_softmax(lr, -1).numpy()
    np.testing.assert_allclose(got, _naive(a.astype(np.float64), b.astype(np.float64), tgt.numpy(), k), atol=1e-4)


def test_pair_reduction_survives_masked_vocabulary():
    lt = torch.randn(3, 20)
    lt[:, -4:] = float("-inf")  # e.g. a padded vocabulary
    out = pair_reductions(lt, torch.randn(3, 20), torch.tensor([0, 1, 2]), ("ltmia",), ltmia_k=6)
    assert torch.isfinite(out["ltmia"]).all()


# ---------------------------------------------------------------------------------------------
# Features: from the paired pass and TokenStats, nothing else
# ---------------------------------------------------------------------------------------------
def _paired_input(target, ref, tokenizer, texts, k=4, max_tokens=128) -> AttackInput:
    spec = FeatureSpec(k=k, max_tokens=max_tokens)
    scorer = CausalScorer([target, ref], tokenizer, batch_size=4, pair_reduction_names=("informia", "ltmia"),
                          pair_settings=spec.pair_settings(), progress=False)
    res = scorer.score(texts)
    recs = [res[i] for i in range(len(texts))]
    return AttackInput(texts=list(texts), target=[r["stats"][0] for r in recs],
                       references=[ReferenceView("ref", [r["stats"][1] for r in recs])],
                       comparison=TokenComparison([r["pair"]["log_ratio"] for r in recs], [r["pair"]["kl_ref_target"] for r in recs]),
                       extras={PAIR_EXTRAS_KEY: [r["pair"] for r in recs]})


def test_features_come_from_the_paired_pass(gpt2, gpt2_ref):
    k = 4
    inp = _paired_input(gpt2.model, gpt2_ref.model, gpt2.tokenizer, TEXTS, k=k)
    spec = FeatureSpec(k=k)
    chunks, owner = input_features(inp, spec)
    assert len(chunks) == len(TEXTS) and owner.tolist() == [0, 1, 2]
    names = feature_names(k)
    col = {n: i for i, n in enumerate(names)}
    v = len(gpt2.tokenizer)
    for i, f in enumerate(chunks):
        ts, rs = inp.target[i], inp.references[0].stats[i]
        assert f.shape == (len(ts), 7 * k + 14) and np.isfinite(f).all()
        # loss block and truth ranks are the models' own TokenStats
        np.testing.assert_allclose(f[:, col["nll_target"]], -ts.logprob, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f[:, col["nll_ref"]], -rs.logprob, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f[:, col["truth_rank_target"]], np.log1p(ts.rank) / np.log(v + 1), atol=1e-5)
        np.testing.assert_allclose(f[:, col["truth_rank_ref"]], np.log1p(rs.rank) / np.log(v + 1), atol=1e-5)
        # truth pair in log-probability space: shifted by the pair's max
        lp = np.stack([ts.logprob, rs.logprob], 1)
        np.testing.assert_allclose(f[:, [col["truth_target"], col["truth_ref"]]], lp - lp.max(1, keepdims=True), atol=1e-4)
        # global block: the same at every position
        d = -ts.logprob + rs.logprob
        np.testing.assert_allclose(f[:, col["mean_nll_diff"]], d.mean(), atol=1e-4)
        np.testing.assert_allclose(f[:, col["sum_nll_diff"]], d.sum(), atol=1e-3)
        assert np.ptp(f[:, -7:], axis=0).max() == 0


def test_features_need_the_ltmia_reduction(gpt2, gpt2_ref):
    inp = _paired_input(gpt2.model, gpt2_ref.model, gpt2.tokenizer, TEXTS[:1], k=4)
    with pytest.raises(FeatureError, match="k=6"):
        input_features(inp, FeatureSpec(k=6))
    inp.extras = {}
    with pytest.raises(FeatureError, match="paired"):
        input_features(inp, FeatureSpec(k=4))


def test_long_texts_are_windowed(gpt2, gpt2_ref):
    inp = _paired_input(gpt2.model, gpt2_ref.model, gpt2.tokenizer, [" ".join(TEXTS * 2)], k=4)
    n = len(inp.target[0])
    spec = FeatureSpec(k=4, max_tokens=8)
    first, _ = input_features(inp, spec, windows="first")
    every, owner = input_features(inp, spec, windows="all")
    assert len(first) == 1 and len(first[0]) == 8
    assert len(every) == math.ceil(n / 8) and sum(map(len, every)) == n and set(owner.tolist()) == {0}
    np.testing.assert_array_equal(every[0], first[0])


# ---------------------------------------------------------------------------------------------
# Classifier: fit / predict_proba / save / load, never pickle
# ---------------------------------------------------------------------------------------------
def _toy(n=160, k=2, t=12, seed=0):
    """Members have a lower target NLL column than non-members (plus noise)."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(k=k, max_tokens=t)
    y = rng.integers(0, 2, n)
    lengths = rng.integers(4, t + 1, n)
    x = rng.normal(size=(n, t, spec.dim)).astype(np.float32)
    x[:, :, spec.names.index("nll_target")] -= 1.5 * y[:, None]
    return spec, [x[i, : lengths[i]] for i in range(n)], y


def test_classifier_fit_predict_save_load(tmp_path):
    spec, X, y = _toy()
    clf = LTMIAClassifier(spec, d_model=32, n_heads=4, d_ff=64, epochs=8, batch_size=32, lr=3e-3, device="cpu")
    assert clf.fit(X[:120], y[:120]) is clf
    assert clf.score(X[120:], y[120:]) > 0.8
    proba = clf.predict_proba(X[120:])
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1)
    path = clf.save(tmp_path / "clf")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["features"]["k"] == 2 and meta["format_version"] == 1 and len(meta["weights_sha256"]) == 64
    again = LTMIAClassifier.load(path)
    np.testing.assert_allclose(again.decision_function(X[120:]), clf.decision_function(X[120:]), rtol=1e-5, atol=1e-5)
    # padded input with lengths gives the same logits
    from memlens.ltmia.features import pad

    xp, lens = pad(X[120:], spec.max_tokens, spec.dim)
    np.testing.assert_allclose(again.decision_function(xp, lens), clf.decision_function(X[120:]), rtol=1e-5, atol=1e-5)
    # tampered weights are refused
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ClassifierError, match="SHA-256"):
        LTMIAClassifier.load(path)


def test_classifier_warm_start_continues_from_the_weights(tmp_path):
    spec, X, y = _toy()
    base = LTMIAClassifier(spec, d_model=32, n_heads=4, d_ff=64, epochs=8, batch_size=32, lr=3e-3, device="cpu").fit(X[:120], y[:120])
    path = base.save(tmp_path / "base")
    shifted = [x + 100.0 for x in X]  # new data on another scale: a from-scratch fit standardises to it
    before = base.decision_function(X[120:])
    # lr 1e-30: AdamW's steps (about lr per weight, its weight decay scaled by lr too) vanish in float32, so a warm
    # start keeps the exact weights and the stored standardisation, not the new data's
    clf = LTMIAClassifier.load(path)
    clf.warm_start, clf.lr, clf.min_lr, clf.epochs = True, 1e-30, 0.0, 2
    clf.fit(shifted[:120], y[:120])
    assert clf.history["warm_start"] is True
    np.testing.assert_array_equal(clf.net.feat_mean.numpy(), base.net.feat_mean.numpy())
    np.testing.assert_allclose(clf.decision_function(X[120:]), before, rtol=1e-6, atol=1e-6)
    # without warm start the same call starts over: standardisation = the mean of the valid positions (by hand)
    cold = LTMIAClassifier.load(path)
    cold.lr, cold.min_lr, cold.epochs = 1e-30, 0.0, 2
    cold.fit(shifted[:120], y[:120])
    assert cold.history["warm_start"] is False
    np.testing.assert_allclose(cold.net.feat_mean.numpy(), np.concatenate(shifted[:120]).mean(0), rtol=1e-5)
    # lr > 0: the weights move from where they were (a few small steps: close to, not equal to, the start)
    tuned = LTMIAClassifier.load(path)
    tuned.warm_start, tuned.lr, tuned.epochs = True, 1e-4, 1
    tuned.fit(X[:120], 1 - y[:120])
    w0, w1 = base.net.proj.weight.detach().numpy(), tuned.net.proj.weight.detach().numpy()
    assert 0 < np.abs(w1 - w0).max() < 0.05 * np.abs(w0).max()
    assert np.corrcoef(tuned.decision_function(X[120:]), before)[0, 1] > 0.9


def test_classifier_rejects_bad_input():
    spec, X, _ = _toy(n=20)
    clf = LTMIAClassifier(spec, d_model=16, n_heads=2, d_ff=32, epochs=1)
    with pytest.raises(ClassifierError, match="both"):
        clf.fit(X, np.ones(20))
    with pytest.raises(ClassifierError, match="not fitted"):
        clf.decision_function(X)
    with pytest.raises(Exception, match="columns|shape"):
        clf.fit(np.zeros((4, 12, spec.dim + 1), np.float32), [0, 1, 0, 1])


# ---------------------------------------------------------------------------------------------
# The attack
# ---------------------------------------------------------------------------------------------
def test_attack_uses_a_saved_classifier(tmp_path, gpt2, gpt2_ref):
    inp = _paired_input(gpt2.model, gpt2_ref.model, gpt2.tokenizer, TEXTS, k=4)
    chunks, _ = input_features(inp, FeatureSpec(k=4))
    clf = LTMIAClassifier(FeatureSpec(k=4), d_model=16, n_heads=2, d_ff=32, epochs=2, device="cpu")
    clf.fit(chunks * 4, [0, 1, 0] * 4)
    path = clf.save(tmp_path / "c.safetensors")
    spec = get_attack("ltmia")
    assert spec.needs_reference
    res = spec(inp, model=str(path))
    assert res.scores.shape == (3,) and np.isfinite(res.scores).all()
    np.testing.assert_allclose(res.scores, clf.decision_function(chunks), rtol=1e-5, atol=1e-5)
    # windows of 4 tokens: the mean of window logits
    small = LTMIAClassifier(FeatureSpec(k=4, max_tokens=4), d_model=16, n_heads=2, d_ff=32, epochs=1, device="cpu")
    small.fit([c[:4] for c in chunks] * 4, [0, 1, 0] * 4)
    p2 = small.save(tmp_path / "small.safetensors")
    w, owner = input_features(inp, small.spec, windows="all")
    expect = [small.decision_function([c for c, o in zip(w, owner) if o == i]).mean() for i in range(3)]
    np.testing.assert_allclose(spec(inp, model=str(p2)).scores, expect, rtol=1e-5, atol=1e-5)
    inp.extras = {}
    with pytest.raises(AttackError, match="ltmia"):
        spec(inp, model=str(path))


def test_default_classifier_is_shipped():
    clf = load_classifier("default")
    assert clf.spec.k == 20 and clf.spec.max_tokens == 128 and clf.spec.dim == 154
    from memlens.ltmia import DEFAULT_CLASSIFIER

    assert DEFAULT_CLASSIFIER.stat().st_size < 8e6
    meta = json.loads(DEFAULT_CLASSIFIER.with_suffix(".json").read_text())
    assert meta["data"]["preset"] == "large"


def test_cli_info_and_train(tmp_path, tiny_data):
    from typer.testing import CliRunner

    from memlens.cli.ltmia import ltmia_app

    r = CliRunner().invoke(ltmia_app, ["info", "default"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["features"]["k"] == 20
    out = tmp_path / "c.safetensors"
    r = CliRunner().invoke(ltmia_app, ["train", str(tiny_data), "--out", str(out), "--epochs", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert LTMIAClassifier.load(out).spec.k == 8


# ---------------------------------------------------------------------------------------------
# End to end on a tiny generated set (CI): the classifier beats `loss` on held-out runs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from memlens.lab.ltmia.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("ltmia-tiny")
    generate(out, GenerateConfig.preset("tiny"), device="cpu")
    return out


@pytest.mark.slow
def test_tiny_generation_trains_a_classifier_that_beats_loss(tiny_data):
    from memlens.lab.ltmia.evaluate import folds, markdown_tables, transfer_eval
    from memlens.lab.ltmia.generate import LTMIADataset

    ds = LTMIADataset.load(tiny_data)
    s = ds.samples
    assert set(s["family"]) == {"gpt2", "llama"} and set(s["domain"]) == {"web", "pii", "code"}
    assert s.groupby("run")["label"].agg(["sum", "count"]).eq([56, 112]).all().all()
    x = ds.features(ds.runs[0])
    assert x.shape == (112, 40, 7 * 8 + 14) and x.dtype == np.float16
    assert [f["held_out"] for f in folds(ds, "family")] == ["gpt2", "llama"]
    from memlens.lab.ltmia.training import TRAIN_PRESETS

    result = transfer_eval(tiny_data, ("family",), device="cpu", **TRAIN_PRESETS["tiny"])
    table = markdown_tables(result)
    assert "ltmia" in table and "loss" in table
    for fold in result["folds"]:
        cell = fold["cells"][fold["held_out"]]
        # held-out family: mean per-run AUC over its 3 runs (one per domain)
        assert cell["mean"]["ltmia"]["auc"] > cell["mean"]["loss"]["auc"] + 0.03, table
        assert cell["mean"]["ltmia"]["auc"] > 0.8, table


# ---------------------------------------------------------------------------------------------
# `--attacks ltmia` in an audit: the shipped classifier, no extra step
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny GPT-2 base pretrained on word salads and its fine-tune on 32 members (as test_cli's)."""
    import random

    from tests.tiny_lm import save_base_and_target, word_salads

    rng = random.Random(0)
    members, nonmembers, pretrain = word_salads(rng, 32), word_salads(rng, 32), word_salads(rng, 96)
    return save_base_and_target(tmp_path_factory.mktemp("ltmia-audit"), members=members, nonmembers=nonmembers,
                                pretrain=pretrain, finetune_steps=40, finetune_lr=2e-3)


def _audit_cmd(root, out, *extra):
    return ["audit", "--target", str(root / "target"), "--reference", str(root / "base"), "--members",
            str(root / "members.jsonl"), "--nonmembers", str(root / "nonmembers.jsonl"), "--out", str(out),
            "--cache-dir", str(root / "cache"), "--bootstrap", "20", "--device", "cpu", "--no-report", *extra]


def test_audit_runs_ltmia_with_the_shipped_classifier(finetuned, tmp_path):
    from typer.testing import CliRunner

    from memlens.cli import app

    runner = CliRunner()
    cmd = _audit_cmd(finetuned, tmp_path / "a", "--attacks", "ltmia,loss,ref")
    cmd.remove("--no-report")
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0, r.output
    assert "ltmia" in (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    m = res["metrics"]
    assert set(m) == {"ltmia", "loss", "ref"}
    # a model family, size, tokenizer and corpus the classifier never saw: it still separates members
    assert m["ltmia"]["auc"] > 0.7, m  # 0.78 here (loss 0.77, ref 0.85)
    import pandas as pd

    scores = pd.read_csv(tmp_path / "a" / "scores.csv")
    assert np.isfinite(scores["ltmia"]).all()
    # the paired pass with the "ltmia" reduction is cached: `memlens attack` reruns it without a model
    cmd = _audit_cmd(finetuned, tmp_path / "b", "--attacks", "ltmia")
    i = cmd.index("--device")
    r = runner.invoke(app, ["attack"] + cmd[1:i] + ["--attacks", "ltmia"])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(tmp_path / "b" / "scores.csv")
    np.testing.assert_allclose(again["ltmia"], scores["ltmia"], rtol=1e-6)


def test_ltmia_is_named_not_in_all_and_needs_a_reference(finetuned, tmp_path):
    from typer.testing import CliRunner

    from memlens.attacks import resolve_attack_names
    from memlens.cli import app

    assert "ltmia" not in resolve_attack_names("all", have_reference=True, have_population=True)
    assert resolve_attack_names("ltmia", have_reference=True, have_population=False) == ["ltmia"]
    runner = CliRunner()
    r = runner.invoke(app, ["attacks"])
    assert r.exit_code == 0 and "ltmia" in r.output
    cmd = _audit_cmd(finetuned, tmp_path / "x", "--attacks", "ltmia")
    i = cmd.index("--reference")
    r = runner.invoke(app, cmd[:i] + cmd[i + 2:])
    assert r.exit_code == 2 and "reference" in r.output
    r = runner.invoke(app, cmd + ["--param", f"ltmia.model={tmp_path / 'missing.safetensors'}"])
    assert r.exit_code == 2 and "ltmia" in r.output and "missing" in r.output, r.output


def test_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from memlens.cli import app

    runner = CliRunner()
    cases = [
        (["ltmia", "train", str(tmp_path / "nowhere")], "not an LT-MIA data set"),
        (["ltmia", "eval", str(tmp_path)], "not an LT-MIA data set"),
        (["ltmia", "generate", str(tmp_path / "g"), "--preset", "huge"], "unknown preset"),
        (["ltmia", "generate", str(tmp_path / "g"), "--preset", "tiny", "--set", "colour=1"], "unknown configuration"),
        (["ltmia", "generate", str(tmp_path / "g"), "--preset", "tiny", "--set", "families=[\"gpt5\"]"], "unknown families"),
        (["ltmia", "info", str(tmp_path / "nope.safetensors")], "missing"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output, (args, r.output)


def test_generation_time_budget_skips_runs(tiny_data, tmp_path):
    import shutil

    from memlens.lab.ltmia.generate import LTMIADataset, generate
    from memlens.ltmia import LTMIAError

    # the same data set with its corpus and tokenizer, no runs yet
    out = tmp_path / "d"
    out.mkdir()
    for name in ("config.json", "corpus", "tokenizer"):
        src = tiny_data / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    with pytest.raises(LTMIAError, match="no run"):
        generate(out, None, device="cpu", max_seconds=0)
    assert not (out / "runs").exists() or not list((out / "runs").glob("*.parquet"))
    with pytest.raises(LTMIAError, match="no finished runs"):
        LTMIADataset.load(out)
