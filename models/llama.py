"""The Llama-family transformer, as one page read top to bottom (gpt-fast style).

`forward(params, config, input_ids, positions, cache=None) -> logits` is a pure function of its
arguments written in `accel.ops` only, so it runs on every backend, traces for `accel.graph.compile`
and differentiates with accel's autograd. `params` maps Hugging Face names
(`model.layers.0.self_attn.q_proj.weight`, ...) to tensors, exactly as a checkpoint stores them.

Shapes: B batch, T new tokens, S key positions (T without a cache, the cache length with one),
H query heads, Hkv key/value heads, D head dim, C hidden size, V vocabulary.
"""
from __future__ import annotations

import array
import math

import accel
from accel import ops, precision
from accel.core.tensor import Tensor

from .config import LlamaConfig
from .kv_cache import KVCache


# --- rotary embedding -----------------------------------------------------------------------
def rope_inv_freq(config: LlamaConfig) -> list[float]:
    """Inverse frequencies per pair of head dims, rounded to float32 as Hugging Face computes them."""
    d = config.head_dim
    inv = [1.0 / (config.rope_theta ** (i / d)) for i in range(0, d, 2)]
    s = config.rope_scaling
    if s is not None:  # Llama 3.1: stretch low frequencies by `factor`, blend the middle band
        low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
        high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
        scaled = []
        for f in _f32(inv):
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                scaled.append(f)
            elif wavelen > low_wavelen:
                scaled.append(f / s.factor)
            else:
                smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / \
                         (s.high_freq_factor - s.low_freq_factor)
                scaled.append((1 - smooth) * f / s.factor + smooth * f)
        inv = scaled
    return _f32(inv)


def _f32(values: list[float]) -> list[float]:
    return list(array.array("f", values))  # round to float32 with the standard library


def rope_tables(config: LlamaConfig, positions: Tensor, dtype) -> tuple[Tensor, Tensor]:
    """cos and sin (T, D) of the angles position * inv_freq, computed in float32 like HF."""
    inv_freq = accel.tensor(rope_inv_freq(config), dtype=accel.float32, backend=positions.backend)
    angles = ops.mul(ops.unsqueeze(ops.cast(positions, accel.float32), -1), inv_freq)  # (T, D/2)
    angles = ops.concat([angles, angles], -1)                                          # (T, D)
    return ops.cast(ops.cos(angles), dtype), ops.cast(ops.sin(angles), dtype)


# --- the blocks -----------------------------------------------------------------------------
def _proj(params: dict, name: str, x: Tensor) -> Tensor:
    # accel.precision.linear is ops.linear unless an FP8 policy covers this layer (docs/fp8.md)
    return precision.linear(name, x, params[name + ".weight"], params.get(name + ".bias"),
                            params.get(name + ".weight_scale"))


def attention_mask(positions: Tensor, cache: KVCache | None) -> Tensor:
    """(T, S) bool: query i sees key j when pos_j <= pos_i. Built from the positions tensor (not
    from T and S), so a decode step has the same shapes at every position; once per forward."""
    key_positions = positions if cache is None else cache.positions   # (S,)
    return ops.ge(ops.unsqueeze(positions, -1), ops.unsqueeze(key_positions, 0))


def attention_block(params: dict, config: LlamaConfig, layer: int, x: Tensor, cos: Tensor,
                    sin: Tensor, positions: Tensor, cache: KVCache | None, mask: Tensor) -> Tensor:
    b, t, _ = x.shape
    p = f"model.layers.{layer}.self_attn."
    h, hkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q = ops.reshape(_proj(params, p + "q_proj", x), (b, t, h, d))     # (B, T, H, D)
    k = ops.reshape(_proj(params, p + "k_proj", x), (b, t, hkv, d))   # (B, T, Hkv, D)
    v = ops.reshape(_proj(params, p + "v_proj", x), (b, t, hkv, d))
    q = ops.permute(q, (0, 2, 1, 3))                                  # (B, H, T, D)
    k = ops.permute(k, (0, 2, 1, 3))                                  # (B, Hkv, T, D)
    v = ops.permute(v, (0, 2, 1, 3))
    q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
    if cache is not None:
        k, v = cache.update(layer, positions, k, v)                   # (B, Hkv, S=max_seq, D)
    out = ops.attention(q, k, v, mask)                                # (B, H, T, D)
    out = ops.reshape(ops.permute(out, (0, 2, 1, 3)), (b, t, h * d))  # (B, T, H*D)
    return _proj(params, p + "o_proj", out)                           # (B, T, C)


def mlp_block(params: dict, layer: int, x: Tensor) -> Tensor:
    p = f"model.layers.{layer}.mlp."
    gate = ops.silu(_proj(params, p + "gate_proj", x))                # (B, T, I)
    return _proj(params, p + "down_proj", ops.mul(gate, _proj(params, p + "up_proj", x)))  # (B, T, C)


def forward(params: dict[str, Tensor], config: LlamaConfig, input_ids: Tensor, positions: Tensor,
            cache: KVCache | None = None, last_only: bool = False) -> Tensor:
    """Logits (B, T, V) for token ids (B, T) at integer `positions` (T,); (B, 1, V) for the last
    position only when `last_only` (generation needs no more: the LM head over a 512-token
    prompt is a fifth of a small model's prefill).

    Without a cache the T tokens attend to each other causally by position (training, scoring);
    nothing is modified in place, so autograd can record it. With a cache, their keys/values
    are written at `positions` and they attend to every cached position <= their own.
    """
    eps = config.rms_norm_eps
    x = ops.embedding(params["model.embed_tokens.weight"], input_ids)        # (B, T, C)
    cos, sin = rope_tables(config, positions, x.dtype)                       # (T, D)
    mask = attention_mask(positions, cache)                                  # (T, S)
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = ops.rms_norm(x, params[p + "input_layernorm.weight"], eps)
        x = ops.add(x, attention_block(params, config, layer, h, cos, sin, positions, cache, mask))
        h = ops.rms_norm(x, params[p + "post_attention_layernorm.weight"], eps)
        x = ops.add(x, mlp_block(params, layer, h))
    if last_only and x.shape[1] > 1:
        x = x[:, -1:]
    x = ops.rms_norm(x, params["model.norm.weight"], eps)
    head = params["model.embed_tokens.weight"] if config.tie_word_embeddings else params["lm_head.weight"]
    return ops.linear(x, head)                                               # (B, T, V)


def causal_lm_loss(config: LlamaConfig):
    """loss(params, inputs, targets): mean next-token cross-entropy over (B, T) ids, no cache.

    Low-precision logits (bfloat16/float16 compute) are taken to float32 for the softmax and the
    loss, as torch autocast does: a bfloat16 loss is rounded to 1/128 of its value, too coarse
    for a loss curve (or an FP8-vs-bfloat16 comparison) to be read to 0.1 %."""

    def loss(params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        positions = ops.arange(inputs.shape[1], backend=inputs.backend)
        logits = forward(params, config, inputs, positions)
        if logits.dtype in (accel.bfloat16, accel.float16):
            logits = ops.cast(logits, accel.float32)
        return ops.cross_entropy(logits, targets)

    return loss


# --- fresh weights --------------------------------------------------------------------------
def init_params(config: LlamaConfig, seed: int = 0, backend=None, dtype=accel.float32) -> dict[str, Tensor]:
    """Random weights as Hugging Face initialises Llama: N(0, initializer_range) for matrices,
    ones for norms, zeros for biases. Each tensor draws from its own seed (seed + index), so the
    same seed gives the same model on every backend."""
    params = {}
    for index, (name, shape) in enumerate(sorted(config.param_shapes().items())):
        if name.endswith("norm.weight"):
            params[name] = ops.ones(shape, dtype, backend)
        elif name.endswith(".bias"):
            params[name] = ops.zeros(shape, dtype, backend)
        else:
            params[name] = ops.random_normal(shape, seed=seed * 100_003 + index, std=config.initializer_range,
                                             dtype=dtype, backend=backend)
    return params
