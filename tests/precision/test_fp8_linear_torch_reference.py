"""`accel.ops.fp8_linear` (forward, dx and dw through accel's autograd) against the independent
plain-torch FP8 linear of torch_fp8_linear.py (torch float8 casts, torch._scaled_mm, the
recipes' axes written out from torchao's rowwise and DeepSeek-V3's block-wise recipes, not
taken from accel.ops.fp8.gemm_blocks).

Both quantize the same values with the same float32 scale amax/448 (or /57344) and the same
round-to-nearest-even, so their float8 codes are identical and only the float32 accumulation
differs: |accel − torch| ≤ 2^-18 · (|A|·|B|) elementwise, A and B the dequantized operands
(measured: at most 6.3e-7 of it, i.e. ~2^-21). A differing code moves its output by at least
2^-4 of one product term; for a term of average size that is 1/(16 K) of |A|·|B|, 9e-5 at
K = 688 and 2.4e-4 at K = 256, 24-64× the bound, so the test sees an axis, format, scale or
rounding difference that touches more than a stray code. bfloat16 results are the same float32
values rounded once: they agree bit for bit except where the two float32 sums straddle a
rounding boundary (measured < 0.03 % of the entries; asserted < 1 %), and there by one
bfloat16 step or, where the sum cancels to far below |A|·|B|, by the float32 bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import accel
from accel import ops
from accel.precision import get_recipe

from torch_fp8_linear import RECIPES, Fp8LinearFunction, quantize

RECIPE_NAMES = ("tensorwise_current", "rowwise", "blockwise")
# (leading dims of x, out N, in K): M = 201 and 200 are not multiples of 128, and K = 688 ends
# in a partial 128-block (the small preset's q/gate projection and its down_proj)
SHAPES = [((3, 67), 688, 256), ((2, 100), 256, 688)]
F32_BOUND = 2.0 ** -18


def _data(lead, n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (k,)).astype(np.float32)
    x[..., 5] *= 30.0  # an outlier channel, so per-row, per-column and per-block scales differ
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    g = (rng.standard_normal(lead + (n,)) * 1e-3).astype(np.float32)
    g[1] *= 50.0  # one batch row of larger gradients
    return x, w, g


def _accel(backend, x, w, g, recipe, dtype):
    attrs = get_recipe(recipe).op_attrs()
    gt = ops.cast(accel.tensor(g, backend=backend), dtype)

    def loss(x, w):
        y = ops.fp8_linear(x, w, **attrs)
        return ops.sum(ops.cast(ops.mul(y, gt), accel.float32)), y

    xt, wt = (ops.cast(accel.tensor(a, backend=backend), dtype) for a in (x, w))
    (_, y), (dx, dw) = accel.value_and_grad(loss, (0, 1), has_aux=True)(xt, wt)
    assert (y.dtype, dx.dtype, dw.dtype) == (dtype,) * 3
    return [ops.cast(t, accel.float32).numpy() for t in (y, dx, dw)]


def _torch(x, w, g, recipe, dtype):
    xt = torch.from_numpy(x).to(dtype).requires_grad_()
    wt = torch.from_numpy(w).to(dtype).requires_grad_()
    y = Fp8LinearFunction.apply(xt, wt, recipe)
    y.backward(torch.from_numpy(g).to(dtype))
    return [t.float().numpy() for t in (y.detach(), xt.grad, wt.grad)]


def _magnitudes(x, w, g, recipe, dtype):
    """|A|·|B| of each GEMM's dequantized operands: the scale of its float32 rounding error."""
    fwd, bwd, _, blocks = RECIPES[recipe]
    k, n = x.shape[-1], w.shape[0]
    x2, g2 = (torch.from_numpy(a).to(dtype).float().reshape(-1, a.shape[-1]) for a in (x, g))
    wt = torch.from_numpy(w).to(dtype).float()

    def deq(v, fmt, block):
        q, s = quantize(v, fmt, block)
        br = v.shape[0] if block[0] == -1 else min(block[0], v.shape[0])
        bc = v.shape[1] if block[1] == -1 else min(block[1], v.shape[1])
        return (q.float() * s.repeat_interleave(br, 0).repeat_interleave(bc, 1)[: v.shape[0], : v.shape[1]]).abs()

    y = deq(x2, fwd, blocks["x"]) @ deq(wt, fwd, blocks["w"]).t()
    dx = deq(g2, bwd, blocks["g_dx"]) @ deq(wt, fwd, blocks["w_dx"])
    dw = deq(g2, bwd, blocks["g_dw"]).t() @ deq(x2, fwd, blocks["x_dw"])
    return y.reshape(x.shape[:-1] + (n,)).numpy(), dx.reshape(x.shape[:-1] + (k,)).numpy(), dw.numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"M{int(np.prod(s[0]))}-N{s[1]}-K{s[2]}")
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_float32_codes_identical_to_torch_reference(backend, recipe, shape):
    x, w, g = _data(*shape, seed=RECIPE_NAMES.index(recipe))
    got = _accel(backend, x, w, g, recipe, accel.float32)
    want = _torch(x, w, g, recipe, torch.float32)
    for name, a, b, mag in zip(("y", "dx", "dw"), got, want, _magnitudes(x, w, g, recipe, torch.float32)):
        excess = np.abs(a - b) - F32_BOUND * mag
        assert excess.max() <= 0, (name, float(np.abs(a - b).max()), float((np.abs(a - b) / mag).max()))
        assert np.abs(b).max() > 0


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_bfloat16_same_values_rounded_once(backend, recipe):
    lead, n, k = SHAPES[1]
    x, w, g = _data(lead, n, k, seed=7)
    got = _accel(backend, x, w, g, recipe, accel.bfloat16)
    want = _torch(x, w, g, recipe, torch.bfloat16)
    for name, a, b, mag in zip(("y", "dx", "dw"), got, want, _magnitudes(x, w, g, recipe, torch.bfloat16)):
        differ = a != b
        assert differ.mean() < 0.01, (name, float(differ.mean()))
        # where the roundings part: one bfloat16 step (2^-7 relative at most) beyond the float32 bound
        assert np.all(np.abs(a - b) <= 2.0 ** -7 * np.abs(b) + F32_BOUND * mag), name


def test_other_codes_break_the_bound():
    """The bound is sharp: the row-wise reference with dw's x operand scaled per tensor instead
    of per channel (other codes for the same values, an equally valid FP8 GEMM) leaves it."""
    x, w, g = _data(*SHAPES[0], seed=1)
    want = _torch(x, w, g, "rowwise", torch.float32)
    fwd, bwd, kind, blocks = RECIPES["rowwise"]
    RECIPES["other"] = (fwd, bwd, kind, dict(blocks, x_dw=(-1, -1)))
    try:
        other = _torch(x, w, g, "other", torch.float32)
    finally:
        del RECIPES["other"]
    mag = _magnitudes(x, w, g, "rowwise", torch.float32)[2]
    np.testing.assert_array_equal(other[0], want[0])  # forward and dx untouched
    assert (np.abs(other[2] - want[2]) - F32_BOUND * mag).max() > 0
