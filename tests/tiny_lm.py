"""A tiny GPT-2 base and its over-trained fine-tune, saved with save_pretrained, for CLI-level tests.

The base is pretrained on word salads; the target is the base fine-tuned on the member texts for
many steps, so membership is easy to detect. Each test module picks its own sizes and steps.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = ("river stone lamp orchard violet copper harbor meadow lantern thistle quarry falcon ember willow "
         "marble cedar pebble saffron juniper tundra canyon velvet walnut hazel amber cobalt").split()


def word_salads(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(14)) + f" code {rng.randint(1000, 9999)}." for _ in range(n)]


def train_causal_lm(model, tok, texts, steps: int, lr: float, seed: int = 0):
    """Full-batch AdamW on ``texts`` (padding masked out of the labels); returns the model in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save_base_and_target(root: Path, *, members: list[str], nonmembers: list[str], pretrain: list[str],
                         finetune_steps: int, finetune_lr: float, population: list[str] | None = None) -> Path:
    """Write root/base, root/target (models + tokenizer) and root/{members,nonmembers[,population]}.jsonl."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(pretrain + members + nonmembers, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    base = train_causal_lm(GPT2LMHeadModel(cfg), tok, pretrain, steps=30, lr=3e-3)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    target = train_causal_lm(base, tok, members, steps=finetune_steps, lr=finetune_lr, seed=1)
    target.save_pretrained(root / "target")
    tok.save_pretrained(root / "target")
    splits = {"members": members, "nonmembers": nonmembers, **({"population": population} if population is not None else {})}
    for name, rows in splits.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    return root
