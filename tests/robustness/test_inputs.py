"""Issue 12, items 2, 3, 8 and 9: inputs that used to give a silent wrong answer, a traceback or a hang
now give one clear line before any work."""
from __future__ import annotations

import json
import time

import pytest

from memlens.audit import audit, score_texts
from memlens.data import DataError, as_samples, gather_audit_samples, load_samples
from memlens.models.handle import ModelHandle
from memlens.models.loading import ModelLoadError, resolve_model
from memlens.passes.causal import PassSettings

TEXTS = ["Amber stone by the river, code 101.", "Copper harbor lantern and the willow.", "Velvet walnut ✓ café."]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- 2: a model directory without tokenizer files ---------------------------------------------

@pytest.fixture(scope="module")
def no_tokenizer_dir(tmp_path_factory, gpt2):
    d = tmp_path_factory.mktemp("no-tokenizer") / "model"
    gpt2.model.save_pretrained(d)  # weights and config only
    assert not any("tok" in p.name or p.name in ("vocab.json", "merges.txt") for p in d.iterdir())
    return d


def test_target_without_tokenizer_files_is_refused(no_tokenizer_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="model has no tokenizer files"):
        ModelHandle(str(no_tokenizer_dir))
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        audit(str(no_tokenizer_dir), members=TEXTS[:2], nonmembers=TEXTS[2:], attacks="loss", device="cpu",
              progress=False, cache_dir=tmp_path)


def test_reference_without_tokenizer_files_is_refused(no_tokenizer_dir, gpt2, tmp_path):
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        audit(str(gpt2.path), str(no_tokenizer_dir), members=TEXTS[:2], nonmembers=TEXTS[2:], attacks="ref",
              device="cpu", progress=False, cache_dir=tmp_path)


def test_an_empty_tokenizer_is_refused(gpt2):
    """What transformers 5 loads from a directory without tokenizer files: no vocabulary, no tokens."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    empty = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(ModelLoadError, match=r"the tokenizer of .* is empty \(vocabulary of 0, a probe text gives 0 tokens\)"):
        ModelHandle(gpt2.model, empty)


# -- 3: a label field inside --members / --nonmembers -----------------------------------------

def test_conflicting_label_field_names_the_file_and_first_id(tmp_path):
    m = _jsonl(tmp_path / "members.jsonl", [{"id": "a", "text": "x", "label": 1}, {"id": "b", "text": "y", "label": 0},
                                            {"id": "c", "text": "z", "label": "non-member"}])
    with pytest.raises(DataError, match=r"members.jsonl: text 'b' has label 0, but it was given as members"):
        gather_audit_samples(members=m)
    n = _jsonl(tmp_path / "nonmembers.jsonl", [{"id": "d", "text": "w", "label": "member"}])
    with pytest.raises(DataError, match=r"nonmembers.jsonl: text 'd' has label 1, but it was given as non-members"):
        load_samples(n, default_label=0)


def test_agreeing_label_fields_are_fine(tmp_path):
    m = _jsonl(tmp_path / "m.jsonl", [{"id": "a", "text": "x", "label": 1}, {"id": "b", "text": "y"}])
    n = _jsonl(tmp_path / "n.jsonl", [{"id": "c", "text": "z", "label": "false"}, {"id": "d", "text": "w", "label": None}])
    assert [(s.id, s.label) for s in gather_audit_samples(members=m, nonmembers=n)] == [("a", 1), ("b", 1), ("c", 0), ("d", 0)]


def test_labelled_data_file_still_takes_its_labels(tmp_path):
    d = _jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0}])
    assert [s.label for s in gather_audit_samples(labelled=d)] == [1, 0]


# -- 9: a lone surrogate ----------------------------------------------------------------------

def test_lone_surrogate_in_a_jsonl_file_is_refused_with_the_id(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "ok", "text": "fine"}\n{"id": "bad-7", "text": "broken \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"m.jsonl record 2: invalid Unicode, a lone surrogate '\\ud800' at character 7"):
        load_samples(p, default_label=1)


def test_lone_surrogate_in_python_inputs_is_refused(gpt2, tmp_path):
    with pytest.raises(DataError, match=r"members item 1 \('members-1'\): invalid Unicode"):
        as_samples(["fine", "bad \udc80"], default_label=1, name="members")
    with pytest.raises(DataError, match=r"invalid Unicode"):
        audit(gpt2.model, members=["fine text", "bad \ud800"], nonmembers=["other text"], tokenizer=gpt2.tokenizer,
              attacks="loss", progress=False, cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"text 1: invalid Unicode"):
        score_texts(gpt2.model, texts=["fine", "bad \ud800"], tokenizer=gpt2.tokenizer, cache_dir=tmp_path,
                    settings=PassSettings(progress=False))


# -- 8: hub ids and mistyped paths ------------------------------------------------------------

@pytest.mark.parametrize("spec", ["./models/my-model", "../my-model", "/no/such/model", "~/no-such-model", "runs/ft/checkpoint-100",
                                  "my model dir", "out/model.safetensors"])
def test_a_mistyped_path_says_not_a_local_path(spec):
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match=f"not a local path: {spec}"):
        resolve_model(spec)
    assert time.monotonic() - t0 < 2


def test_an_uncached_hub_id_offline_fails_fast_naming_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot get model 'memlens-nobody/no-such-model'.*HF_HUB_OFFLINE"):
        resolve_model("memlens-nobody/no-such-model")
    assert time.monotonic() - t0 < 5


def test_a_hub_id_without_network_fails_fast_naming_it(monkeypatch):
    """Online mode, but the network refuses (tests/conftest.py blocks every non-local connection)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot get model 'memlens-nobody/no-such-model'"):
        resolve_model("memlens-nobody/no-such-model")
    assert time.monotonic() - t0 < 5


def test_hub_timeouts_have_a_default():
    import os

    assert float(os.environ["HF_HUB_ETAG_TIMEOUT"]) > 0 and float(os.environ["HF_HUB_DOWNLOAD_TIMEOUT"]) > 0


@pytest.fixture
def silent_hub(monkeypatch):
    """A hub endpoint that accepts connections and never answers (the ≥ 590 s hang of issue 12)."""
    import socket
    import threading

    from huggingface_hub import constants

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    yield
    stop.set()
    th.join()
    for c in held:
        c.close()
    srv.close()


def test_a_hub_that_never_answers_fails_in_seconds_naming_the_id(silent_hub):
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot get model 'memlens-nobody/no-such-model'.*[Tt]imeout"):
        resolve_model("memlens-nobody/no-such-model")
    assert time.monotonic() - t0 < 15
