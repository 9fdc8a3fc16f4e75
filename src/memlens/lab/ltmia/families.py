"""Tiny causal LMs of several architecture families, built from ``transformers`` configs.

Every family is randomly initialised from a config (never downloaded), shares the tokenizer
of the data generation, and exposes the same ``model(input_ids, attention_mask, labels)``
interface, so one training loop and one statistics pass serve all of them.

Families: ``gpt2`` (learned positions, GELU MLP), ``llama`` (RoPE, RMSNorm, SwiGLU),
``gptneox`` (Pythia-style: parallel attention + MLP, partial RoPE), ``opt`` (learned positions,
ReLU, pre-LN), and two non-transformer families: ``mamba`` (selective state space model; on a
CPU, or without the ``mamba-ssm`` kernels, transformers runs its pure-PyTorch scan) and
``rwkv`` (RWKV-4 linear attention; pure-PyTorch recurrence unless its CUDA kernel is available).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: family -> "transformer" or the name of its non-transformer mechanism
FAMILY_KIND = {
    "gpt2": "transformer",
    "llama": "transformer",
    "gptneox": "transformer",
    "opt": "transformer",
    "mamba": "state-space",
    "rwkv": "linear-attention",
}
FAMILIES = tuple(FAMILY_KIND)


@dataclass(frozen=True)
class ModelSize:
    """Width and depth of a tiny LM (``d_ff`` is the MLP width of transformer families)."""

    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    d_ff: int = 384

    def to_dict(self) -> dict:
        return {"d_model": self.d_model, "n_layer": self.n_layer, "n_head": self.n_head, "d_ff": self.d_ff}


def make_lm(family: str, size: ModelSize, vocab_size: int, context: int, seed: int = 0,
            pad_id: int = 0, bos_id: int = 0, eos_id: int = 0) -> torch.nn.Module:
    """A freshly initialised causal LM of ``family`` (see :data:`FAMILIES`)."""
    import transformers as tf

    torch.manual_seed(seed)
    d, L, h, ff = size.d_model, size.n_layer, size.n_head, size.d_ff
    ids = dict(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=d, n_layer=L, n_head=h, n_inner=ff,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=ff, num_hidden_layers=L,
                             num_attention_heads=h, num_key_value_heads=h, max_position_embeddings=context,
                             tie_word_embeddings=True, **ids)
        model = tf.LlamaForCausalLM(cfg)
    elif family == "gptneox":
        cfg = tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=ff, num_hidden_layers=L,
                               num_attention_heads=h, max_position_embeddings=context, rotary_pct=0.25,
                               use_parallel_residual=True, tie_word_embeddings=False, hidden_dropout=0.0,
                               attention_dropout=0.0, **ids)
        model = tf.GPTNeoXForCausalLM(cfg)
    elif family == "opt":
        cfg = tf.OPTConfig(vocab_size=vocab_size, hidden_size=d, ffn_dim=ff, num_hidden_layers=L, num_attention_heads=h,
                           max_position_embeddings=context, word_embed_proj_dim=d, dropout=0.0, attention_dropout=0.0,
                           do_layer_norm_before=True, **ids)
        model = tf.OPTForCausalLM(cfg)
    elif family == "mamba":
        cfg = tf.MambaConfig(vocab_size=vocab_size, hidden_size=d, num_hidden_layers=L, state_size=16, expand=2,
                             conv_kernel=4, use_cache=False, tie_word_embeddings=True, **ids)
        model = tf.MambaForCausalLM(cfg)
    elif family == "rwkv":
        cfg = tf.RwkvConfig(vocab_size=vocab_size, context_length=context, hidden_size=d, num_hidden_layers=L,
                            attention_hidden_size=d, intermediate_size=ff, use_cache=False, tie_word_embeddings=False,
                            **ids)
        model = tf.RwkvForCausalLM(cfg)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return model
