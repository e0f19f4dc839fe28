"""The torch backend's decode fast paths give exactly what the slower, obvious code gives:
rope by roll against Hugging Face's own `rotate_half` formula bit for bit, the CPU index check
against numpy's rules, and accel tensors made under `torch.inference_mode()` stay usable outside
it (a KV cache from one generate call written by the next)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_hf = pytest.importorskip("transformers.models.llama.modeling_llama")

import accel  # noqa: E402
import accel.models  # noqa: E402
from accel import ops  # noqa: E402
from accel.backends.torch import fused as torch_fused  # noqa: E402




def hf_rope(x, cos, sin):
    return x * cos + llama_hf.rotate_half(x) * sin  # transformers' apply_rotary_pos_emb, per tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [1, 7])
def test_rope_is_bit_identical_to_hugging_face(tb, dtype, t):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, t, 3, 16, generator=g, dtype=dtype).permute(0, 2, 1, 3)  # (B, H, T, D), strided
    angles = torch.randn(t, 8, generator=g, dtype=dtype) * 20
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, float("inf")], dtype=dtype)
    want = hf_rope(x, cos, sin)
    got = ops.rope(accel.from_dlpack(x, tb), accel.from_dlpack(cos, tb), accel.from_dlpack(sin, tb)).data
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    assert torch.equal(got[finite], want[finite])
    assert torch.equal(torch.signbit(got[finite]), torch.signbit(want[finite]))  # -0.0 kept


def test_rope_sign_table_made_in_inference_mode_does_not_break_torch_autograd(tb):
    # First use of this head dim inside inference_mode, then torch autograd through the kernel.
    x = torch.randn(1, 2, 3, 22, dtype=torch.float64)
    cos, sin = torch.rand(3, 22, dtype=torch.float64), torch.rand(3, 22, dtype=torch.float64)
    with torch.inference_mode():
        torch_fused.rope(x, cos, sin)
    xg, sg = x.clone().requires_grad_(), sin.clone().requires_grad_()
    torch_fused.rope(xg, cos, sg).sum().backward()
    xr, sr = x.clone().requires_grad_(), sin.clone().requires_grad_()
    hf_rope(xr, cos, sr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(sg.grad, sr.grad, rtol=0, atol=1e-15)


def test_index_copy_checks_before_writing_and_refuses_negatives(tb):
    base = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    x = accel.from_numpy(base.copy(), backend=tb)
    rows = accel.from_numpy(np.full((2, 3), -1.0, np.float32), backend=tb)
    for bad in (4, -1):
        with pytest.raises(accel.IndexOutOfRangeError, match=f"index {bad} is out of range \\[0, 4\\) along axis 0"):
            x.index_copy_(0, accel.tensor([1, bad], backend=tb), rows)
        np.testing.assert_array_equal(x.numpy(), base)  # nothing written: row 1 untouched
    x.index_copy_(0, accel.tensor([3, 0], backend=tb), rows)
    want = base.copy()
    want[[3, 0]] = -1.0
    np.testing.assert_array_equal(x.numpy(), want)
    # past the small-index path (torch.aminmax): 100 indices
    values = np.arange(300.0, dtype=np.float32).reshape(100, 3)
    index = np.random.default_rng(0).permutation(100)
    y = accel.from_numpy(np.zeros_like(values), backend=tb)
    y.index_copy_(0, accel.tensor(index.tolist(), backend=tb), accel.from_numpy(values, backend=tb))
    want = np.zeros_like(values)
    want[index] = values
    np.testing.assert_array_equal(y.numpy(), want)
    index[50] = -1
    with pytest.raises(accel.IndexOutOfRangeError, match="index -1 is out of range"):
        y.index_copy_(0, accel.tensor(index.tolist(), backend=tb), accel.from_numpy(values, backend=tb))


def test_generate_inside_then_outside_inference_mode(tb):
    config = accel.models.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.2)
    model = accel.models.LlamaModel.random(config, backend=tb)
    plain = model.generate([1, 2, 3], 6)
    model.cache = None
    with torch.inference_mode():  # the KV cache is made here, as inference tensors ...
        inside = model.generate([1, 2, 3], 6)
    again = model.generate([1, 2, 3], 6)  # ... and written to out here
    assert inside == plain and again == plain
