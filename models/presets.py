"""Named model sizes for `accel train --model-config NAME`.

The vocabulary comes from the tokenizer at training time; everything else is fixed here so a
name means the same model everywhere. Sizes follow the usual small-Llama proportions: SwiGLU
hidden ≈ 8/3 · C rounded to a multiple of 16, grouped-query attention with half as many KV heads.
"""
from __future__ import annotations

import dataclasses

from accel.core.errors import ModelError

from .config import LlamaConfig

PRESETS: dict[str, dict] = {
    # for tests: trains a step in milliseconds
    "micro": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
    # the bundled demo model: ~1 M parameters, trains in minutes on two CPU cores
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=1024),
}


def preset(name: str, vocab_size: int, bos_token_id: int | None = None,
           eos_token_id: int | None = None) -> LlamaConfig:
    """The LlamaConfig called `name`, with the tokenizer's vocabulary and special ids."""
    sizes = PRESETS.get(name)
    if sizes is None:
        raise ModelError(f"unknown model config {name!r}",
                         hint=f"use one of: {', '.join(PRESETS)}, or a path to a config.json")
    return LlamaConfig(model_type="llama", vocab_size=vocab_size, rms_norm_eps=1e-5,
                       rope_theta=10000.0, initializer_range=0.02, tie_word_embeddings=False,
                       bos_token_id=bos_token_id, torch_dtype="float32",
                       eos_token_id=() if eos_token_id is None else (eos_token_id,), **sizes)


def with_vocab(config: LlamaConfig, vocab_size: int) -> LlamaConfig:
    return dataclasses.replace(config, vocab_size=vocab_size)
