"""A small audit on a tiny random model, with a hostile text, saved with its report."""
from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> & </textarea>'


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_pair):
    import memlens
    from memlens.report import write_report

    model, ref, tok = tiny_pair
    members = [{"id": f"mem-{i}", "text": f"Alice Smith, phone 555-01{i:02d}, lives at {i} Elm Street.",
                "pii": [{"type": "phone", "start": 18, "end": 26}]} for i in range(6)]
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
