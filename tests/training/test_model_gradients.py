"""Whole-model gradients: accel's autograd through models/llama.py against torch.autograd
through Hugging Face LlamaForCausalLM with the same weights, every parameter compared."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import transformers

import accel
from accel import ops
from accel.models.config import LlamaConfig
from accel.models.llama import forward, init_params

CONFIG = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                     max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=False)


def hf_model(config: LlamaConfig, params: dict, dtype):
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_dict().items()
                                            if k not in ("architectures", "torch_dtype")})
    hf_config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(hf_config).to(dtype)
    state = {k: torch.tensor(np.asarray(v.numpy(), np.float64), dtype=dtype) for k, v in params.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model


def causal_lm_loss(params, config, ids):
    t = ids.shape[1]
    logits = forward(params, config, ids, ops.arange(t, backend=ids.backend))        # (B, T, V)
    return ops.cross_entropy(logits[:, :-1], ids[:, 1:])


@functools.lru_cache(maxsize=None)
def torch_reference(precision: str):
    """Weights, token ids, and torch.autograd's loss and gradients (computed once per dtype)."""
    host = init_params(CONFIG, seed=3, backend="numpy", dtype=accel.float64)
    ids_np = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 7))
    model = hf_model(CONFIG, host, getattr(torch, precision))
    tids = torch.tensor(ids_np)
    logits = model(tids).logits
    tloss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, CONFIG.vocab_size), tids[:, 1:].reshape(-1))
    tloss.backward()
    return host, ids_np, tloss, {k: p.grad.double().numpy() for k, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_llama_gradients_match_torch_autograd_on_hf(backend, precision):
    dtype = getattr(accel, precision)
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.spec} has no {precision}")
    host, ids_np, tloss, tgrads = torch_reference(precision)

    params = {k: accel.tensor(v.numpy(), dtype=dtype, backend=backend) for k, v in host.items()}
    ids = accel.tensor(ids_np, backend=backend)
    loss, grads = accel.value_and_grad(causal_lm_loss)(params, CONFIG, ids)

    # HF runs LlamaRMSNorm and the rotary tables in float32 even in a float64 model, so float64
    # agreement is bounded by float32 rounding inside the oracle. Measured worst |diff| / max|g|:
    # 4.3e-7 (float64), 1.5e-6 (float32).
    rtol, atol = (1e-6, 2e-6) if precision == "float64" else (1e-4, 1e-5)
    assert float(loss) == pytest.approx(float(tloss.detach()), rel=1e-6)
    assert set(grads) == set(tgrads)
    for name, g in grads.items():
        assert g.dtype is dtype and g.shape == tuple(tgrads[name].shape)
        np.testing.assert_allclose(np.asarray(g.numpy(), np.float64), tgrads[name], rtol=rtol,
                                   atol=atol * np.abs(tgrads[name]).max(), err_msg=name)


def test_mixed_precision_bfloat16_compute_float32_master(backend):
    """bf16 forward/backward, float32 master gradients close to the float32 ones."""
    if accel.bfloat16 not in backend.dtypes:
        pytest.skip(f"{backend.spec} has no bfloat16")
    host = init_params(CONFIG, seed=3, backend="numpy", dtype=accel.float32)
    params = {k: accel.tensor(v.numpy(), backend=backend) for k, v in host.items()}
    ids = accel.tensor(np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 7)), backend=backend)

    def bf16_loss(p, config, ids):
        return ops.cast(causal_lm_loss({k: ops.cast(v, accel.bfloat16) for k, v in p.items()}, config, ids),
                        accel.float32)

    loss16, g16 = accel.value_and_grad(bf16_loss)(params, CONFIG, ids)
    loss32, g32 = accel.value_and_grad(causal_lm_loss)(params, CONFIG, ids)
    assert abs(float(loss16) - float(loss32)) < 0.05
    for name in g32:
        assert g16[name].dtype is accel.float32
        a, b = np.asarray(g16[name].numpy(), np.float64), np.asarray(g32[name].numpy(), np.float64)
        assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(b) + 1e-6, name
