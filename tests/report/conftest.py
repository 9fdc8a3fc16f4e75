"""Report fixtures: a synthetic audit (no model; hostile texts, ids, PII types and model names)
and a small real audit on tiny random GPT-2 models, each saved with its report.html."""
from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# The brief's hostile text, with a few more ways out of a <script> element / attribute / comment.
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> & </textarea>'
HOSTILE2 = "</script><script>window.__pwned=3</script><!-- <svg onload=window.__pwned=4> \u2028 ]]> \"' `${x}`"
HOSTILE_ID = '"><img src=x onerror=window.__pwned=5>'
HOSTILE_TYPE = "<b onmouseover=window.__pwned=6>ssn</b>"
HOSTILE_MODEL = "<script>window.__pwned=7</script>"


def make_synthetic(n_texts: int = 40, n_bootstrap: int = 20, **kw):
    """A synthetic AuditResult with three hostile texts (and a hostile PII type and model name)."""
    from memlens.report._synthetic import synthetic_result

    result = synthetic_result(n_texts, 40, extra_texts=[("evil", HOSTILE, 0), ("evil2", HOSTILE2, 0), (HOSTILE_ID, "an innocent text", 0)],
                              n_bootstrap=n_bootstrap, **kw)
    for s in result.samples:
        if s.id == "evil":
            s.meta["pii"] = [{"type": HOSTILE_TYPE, "start": 0, "end": 20, "value": "x"}]
    result.settings["target"]["name"] = HOSTILE_MODEL
    return result


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic()


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory, synthetic):
    from memlens.report import write_report

    out = tmp_path_factory.mktemp("synthetic")
    synthetic.save(out)
    write_report(synthetic, out)
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_pair):
    """A real (tiny) audit: target and reference GPT-2 models with random weights."""
    import memlens
    from memlens.report import write_report

    model, ref, tok = tiny_pair
    members = [{"id": f"mem-{i}", "text": f"Alice Smith, phone 555-01{i:02d}, lives at {i} Elm Street.",
                "pii": [{"type": "phone", "start": 19, "end": 27}], "tier": 1 + i % 2} for i in range(6)]
    nonmembers = [{"id": f"non-{i}", "text": f"Bob Jones called 555-02{i:02d} about the weather."} for i in range(5)]
    nonmembers.append({"id": "evil", "text": HOSTILE})
    out = tmp_path_factory.mktemp("report")
    result = memlens.audit(model, [ref], members=members, nonmembers=nonmembers, tokenizer=tok, cache_dir=None,
                           attacks=["loss", "minkpp", "ref", "informia_token"], n_bootstrap=20, progress=False)
    result.save(out)
    write_report(result, out)
    return out


@pytest.fixture(scope="module")
def tiny_pair():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = ["Alice Smith, phone 555-0100, lives at 1 Elm Street.", "Bob Jones called about the weather.", HOSTILE]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    torch.manual_seed(1)
    ref = GPT2LMHeadModel(cfg).eval()
    return model, ref, tok
