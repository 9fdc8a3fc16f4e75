"""Issue 12, items 1 and 4: another model's (or another dtype's) statistics are never reused.

The old fingerprint hashed only the first and last MiB of each weight file (and the first 4,096
values of each in-memory tensor), so a fine-tune that changed only middle tensors reused the base
model's cached statistics and reported its numbers."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from memlens.audit import audit, score_texts
from memlens.models import loading
from memlens.models.handle import LoadOptions
from memlens.models.loading import ModelSpec, file_content_hash, fingerprint_files, fingerprint_module
from memlens.passes.causal import PassSettings
from tests.conftest import make_gpt2

TEXTS = ["Amber stone by the river, code 101.", "Copper harbor lantern and the willow.", "Velvet walnut ✓ café."]
MIDDLE = "transformer.h.1.mlp.c_fc.weight"


def _safetensors_offset(path: Path, name: str) -> tuple[int, int]:
    """Byte range of one tensor's data in a safetensors file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    a, b = header[name]["data_offsets"]
    return 8 + n + a, 8 + n + b


@pytest.fixture(scope="module")
def twins(tmp_path_factory, tokenizer):
    """Two saved GPT-2s (about 9 MB of weights) that differ only in one tensor in the middle of the file."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("twins")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=192, n_layer=3, n_head=2, initializer_range=0.3,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(root / "a")
    tokenizer.save_pretrained(root / "a")
    with torch.no_grad():
        model.get_parameter(MIDDLE).add_(torch.randn_like(model.get_parameter(MIDDLE)))
    model.save_pretrained(root / "b")
    tokenizer.save_pretrained(root / "b")
    return root / "a", root / "b"


def test_twins_differ_only_in_the_middle_of_the_weight_file(twins):
    """The premise: the changed bytes lie outside the first and last MiB the old fingerprint read."""
    a, b = (p / "model.safetensors" for p in twins)
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db) > 4 << 20
    diff = np.flatnonzero(np.frombuffer(da, np.uint8) != np.frombuffer(db, np.uint8))
    start, end = _safetensors_offset(a, MIDDLE)
    assert start <= diff.min() and diff.max() < end
    assert diff.min() > 1 << 20 and diff.max() < len(da) - (1 << 20)


def test_middle_tensor_change_gives_another_fingerprint_and_other_scores(twins, tmp_path):
    a, b = twins
    assert fingerprint_files(ModelSpec(str(a), a)) != fingerprint_files(ModelSpec(str(b), b))
    opts = LoadOptions(device="cpu", dtype="float32")
    first = score_texts(str(a), texts=TEXTS, cache_dir=tmp_path / "cache", options=opts, settings=PassSettings(progress=False))
    second = score_texts(str(b), texts=TEXTS, cache_dir=tmp_path / "cache", options=opts, settings=PassSettings(progress=False))
    assert first.computed == len(TEXTS)
    assert second.computed == len(TEXTS)  # nothing reused from the other model's namespace
    diffs = [np.abs(x.logprob - y.logprob).max() for x, y in zip(first.target, second.target)]
    assert min(diffs) > 1e-3


def test_audit_results_name_both_models_apart(twins, tmp_path):
    a, b = twins
    kw = dict(members=TEXTS[:2], nonmembers=TEXTS[2:], attacks="loss", n_bootstrap=10, device="cpu", progress=False,
              cache_dir=tmp_path / "cache")
    ra, rb = audit(str(a), **kw), audit(str(b), **kw)
    assert ra.settings["target"]["fingerprint"] != rb.settings["target"]["fingerprint"]
    assert not np.allclose(ra.scores["loss"], rb.scores["loss"])


def test_in_memory_models_hash_every_value(tokenizer):
    m1, m2 = make_gpt2(len(tokenizer), seed=0), make_gpt2(len(tokenizer), seed=0)
    assert fingerprint_module(m1) == fingerprint_module(m2)
    with torch.no_grad():  # one value far past the first 4,096 of its tensor
        w = m2.get_parameter("transformer.wte.weight")
        assert w.numel() > 5000
        w.view(-1)[5000] += 1e-3
    assert fingerprint_module(m1) != fingerprint_module(m2)
    assert fingerprint_module(m1) != fingerprint_module(m1.to(torch.bfloat16))


def test_file_hashes_are_memoized_by_path_size_mtime_inode(twins, tmp_path, monkeypatch):
    f = tmp_path / "w.safetensors"
    shutil.copy(twins[0] / "model.safetensors", f)
    calls = []
    real = loading._xxh3_file
    monkeypatch.setattr(loading, "_xxh3_file", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(loading, "FILE_HASHES", loading._FileHashMemo())
    h1 = file_content_hash(f)
    assert file_content_hash(f) == h1 and len(calls) == 1
    # a new process: the memo on disk, under the memlens cache directory, answers
    monkeypatch.setattr(loading, "FILE_HASHES", loading._FileHashMemo())
    assert file_content_hash(f) == h1 and len(calls) == 1
    memo = json.loads((Path(os.environ["MEMLENS_CACHE"]) / "file-hashes.json").read_text())
    assert memo[str(f.resolve())][3] == h1
    # rewritten in place (same size): a new mtime forces a rehash, and the new content a new hash
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_content_hash(f) != h1 and len(calls) == 2


def test_hub_snapshot_files_use_the_blob_hash(tmp_path, monkeypatch):
    """Files of a Hugging Face cache snapshot are symlinks to blobs named by their SHA-256: used as is, no read."""
    sha = "ab" * 32
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / sha).write_bytes(b"weights")
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(Path("..") / ".." / "blobs" / sha)
    monkeypatch.setattr(loading, "_xxh3_file", lambda p: pytest.fail(f"{p} was read"))
    assert file_content_hash(snap / "model.safetensors") == f"hub:{sha}"


def test_float32_and_bfloat16_runs_do_not_share_statistics(gpt2, tmp_path):
    settings = PassSettings(progress=False)
    f32 = score_texts(str(gpt2.path), texts=TEXTS, cache_dir=tmp_path, settings=settings,
                      options=LoadOptions(device="cpu", dtype="float32"))
    bf16 = score_texts(str(gpt2.path), texts=TEXTS, cache_dir=tmp_path, settings=settings,
                       options=LoadOptions(device="cpu", dtype="bfloat16"))
    assert f32.computed == bf16.computed == len(TEXTS)
    again = score_texts(str(gpt2.path), texts=TEXTS, cache_dir=tmp_path, settings=settings,
                        options=LoadOptions(device="cpu", dtype="auto"))  # auto on CPU is float32: reused
    assert again.computed == 0
    assert any(not np.array_equal(x.logprob, y.logprob) for x, y in zip(f32.target, bf16.target))


def test_results_json_records_the_resolved_load_settings(gpt2, tmp_path):
    r = audit(str(gpt2.path), members=TEXTS[:2], nonmembers=TEXTS[2:], attacks="loss", n_bootstrap=10, device="cpu",
              dtype="auto", progress=False, cache_dir=tmp_path / "cache")
    assert r.settings["target"]["load"] == {"dtype": "float32", "revision": None, "device_map": None}
    r.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["settings"]["target"]["load"]["dtype"] == "float32"
