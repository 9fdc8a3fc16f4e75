"""GGUF loading gives a clear message when its optional dependencies are missing."""
from __future__ import annotations

import pytest

from memlens.models import loading


def test_missing_gguf_package_is_explained(monkeypatch, tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setattr(loading, "_missing", lambda m: m == "gguf")
    ms = loading.resolve_model(str(f))
    assert ms.gguf_file == "model.gguf"
    with pytest.raises(loading.ModelLoadError, match=r"pip install 'memlens\[gguf\]'"):
        loading.load_tokenizer(ms)
    with pytest.raises(loading.ModelLoadError, match="needs gguf"):
        loading.load_model(ms, device="cpu")


def test_directory_holding_only_a_gguf_points_to_the_flag(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(loading.ModelLoadError, match="--gguf-file m.gguf"):
        loading.resolve_model(str(tmp_path))
