"""Tiny random Hugging Face models for the parity tests, saved as safetensors.

initializer_range 0.2 so the logits are far from flat (a wrong op shows), eager attention,
float32: the reference `transformers` computes exactly what the model card says.
"""
from __future__ import annotations

SMALL = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             initializer_range=0.2, rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None,
             pad_token_id=None)

# llama3-rope: with head_dim 16 and original_max_position_embeddings 64 the frequencies fall in
# all three bands (kept, blended, divided by factor).
# name -> (config class, model class, config overrides, save_pretrained kwargs)
VARIANTS = {
    "llama-gqa": ("LlamaConfig", "LlamaForCausalLM", {}, {}),
    "llama3-rope": ("LlamaConfig", "LlamaForCausalLM",
                    {"rope_theta": 500000.0, "max_position_embeddings": 256,
                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
                    {}),
    "llama-tied-mha": ("LlamaConfig", "LlamaForCausalLM",
                       {"tie_word_embeddings": True, "num_key_value_heads": 4, "head_dim": 24}, {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"rope_theta": 1000000.0}, {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None, "num_key_value_heads": 1}, {}),
    "llama-sharded": ("LlamaConfig", "LlamaForCausalLM", {"num_hidden_layers": 3}, {"max_shard_size": "60KB"}),
}


def build_hf(variant: str, folder: str, seed: int = 0):
    import torch
    import transformers

    config_cls, model_cls, overrides, save_kwargs = VARIANTS[variant]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**{**SMALL, **overrides})
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True, **save_kwargs)
    return model
