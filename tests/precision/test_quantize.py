"""quantize_fp8 / dequantize_fp8 / block scales: bit-exact against ml_dtypes, saturation at the
formats' largest finite values, zero and non-finite blocks (CPU, every selected backend)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops
from accel.ops.fp8 import FLOAT8_MAX, block_amax, expand_scales, quantize_blocks, scale_from_amax

FORMATS = [(accel.float8_e4m3fn, ml_dtypes.float8_e4m3fn), (accel.float8_e5m2, ml_dtypes.float8_e5m2)]


def _bits(a):
    return np.asarray(a).view(np.uint8)


@pytest.mark.parametrize("fmt,ml", FORMATS, ids=["e4m3fn", "e5m2"])
def test_quantize_is_bit_exact_against_ml_dtypes(backend, fmt, ml):
    rng = np.random.default_rng(0)
    # every magnitude the format holds (subnormals to max), ties, -0.0 and NaN
    x = np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.uniform(-4, 2, 4000),
                        np.array([0.0, -0.0, np.nan, 0.5, 1.0625, 3.25, 2 ** -10, -(2 ** -17)])]).astype(np.float32)
    scale = np.float32(0.37)
    q = ops.quantize_fp8(accel.tensor(x, backend=backend), accel.tensor(np.array(scale), backend=backend), fmt)
    # the independent answer: float32 division, then ml_dtypes round-to-nearest-even, clamped
    top = FLOAT8_MAX[fmt]
    want = np.clip(x / scale, -top, top).astype(ml)
    got = q.numpy()
    assert got.dtype == ml
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(_bits(got)[~nan], _bits(want)[~nan])


@pytest.mark.parametrize("fmt,ml", FORMATS, ids=["e4m3fn", "e5m2"])
def test_quotients_on_a_rounding_tie_round_to_even(backend, fmt, ml):
    """x / scale landing exactly halfway between two float8 values, with the scales quantize_blocks
    makes (amax / 448 or / 57344), rounds to the even code. A division computed as x · (1/scale)
    (as XLA rewrites a division by a broadcast divisor) misses the tie and takes the other code."""
    rng = np.random.default_rng(5)
    amax = rng.uniform(0.01, 10.0, 64).astype(np.float32)
    scale = amax / np.float32(FLOAT8_MAX[fmt])
    grid = np.arange(256, dtype=np.uint8).view(ml).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid) & (grid > 2.0 ** -6)])  # positive normal values
    ties = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)
    x = (ties[None, :].astype(np.float64) * scale[:, None]).astype(np.float32)
    on_tie = (x / scale[:, None] == ties) & (x * (np.float32(1) / scale[:, None]) != ties)
    x = np.where(on_tie, x, 0.0).astype(np.float32)
    x[:, 0] = amax  # each row's amax, so quantize_blocks makes exactly these scales
    assert on_tie.sum() > 100
    q, s = quantize_blocks(accel.tensor(x, backend=backend), fmt, (1, -1))
    np.testing.assert_array_equal(s.numpy().view(np.uint32), scale[:, None].view(np.uint32))
    want = (x / scale[:, None]).astype(ml)  # float32 division, ml_dtypes round-to-nearest-even
    np.testing.assert_array_equal(_bits(q.numpy()), _bits(want))


@pytest.mark.parametrize("fmt,ml,top", [(accel.float8_e4m3fn, ml_dtypes.float8_e4m3fn, 448.0),
                                        (accel.float8_e5m2, ml_dtypes.float8_e5m2, 57344.0)], ids=["e4m3fn", "e5m2"])
def test_saturation_at_the_largest_finite_value(backend, fmt, ml, top):
    x = np.array([top, top * 1.5, 1e30, -1e30, np.inf, -np.inf, np.nan], np.float32)
    one = accel.tensor(np.float32(1.0), backend=backend)
    sat = ops.quantize_fp8(accel.tensor(x, backend=backend), one, fmt).numpy().astype(np.float32)
    np.testing.assert_array_equal(sat[:6], [top, top, top, -top, top, -top])
    assert np.isnan(sat[6])
    raw = ops.quantize_fp8(accel.tensor(x, backend=backend), one, fmt, saturate=False).numpy().astype(np.float32)
    if fmt is accel.float8_e4m3fn:  # no infinity: overflow is NaN
        assert raw[0] == top and np.isnan(raw[1:]).all()
    else:  # e5m2 overflows to ±inf
        assert raw[0] == top and list(raw[1:6]) == [np.inf, np.inf, -np.inf, np.inf, -np.inf]


def test_dequantize_inverts_quantize_within_half_an_ulp(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 200)).astype(np.float32)
    q, s = quantize_blocks(accel.tensor(x, backend=backend), accel.float8_e4m3fn, (1, 128))
    back = ops.dequantize_fp8(q, expand_scales(s, (1, 128), (8, 200))).numpy()
    full = np.repeat(np.repeat(s.numpy(), 1, 0), 128, 1)[:, :200]
    # e4m3fn has 3 mantissa bits: relative rounding error <= 2^-4 for normal values
    normal = np.abs(x / full) >= 2 ** -6
    assert np.all(np.abs(back - x)[normal] <= 2 ** -4 * np.abs(x)[normal] + 1e-7)
    # each 1x128 tile's largest value lands exactly on 448
    tiles = np.abs(q.numpy().astype(np.float32))
    assert tiles[:, :128].max(axis=1).tolist() == [448.0] * 8 and tiles[:, 128:].max(axis=1).tolist() == [448.0] * 8


def test_zero_amax_block_gives_scale_one_and_zeros(backend):
    x = np.zeros((4, 256), np.float32)
    x[:, 128:] = np.random.default_rng(2).standard_normal((4, 128))
    q, s = quantize_blocks(accel.tensor(x, backend=backend), accel.float8_e4m3fn, (1, 128))
    scales = s.numpy()
    assert scales.shape == (4, 2) and np.all(scales[:, 0] == 1.0) and np.all(np.isfinite(scales))
    assert np.all(q.numpy()[:, :128].astype(np.float32) == 0.0)
    # margin: one binade of headroom halves the quantized maximum
    amax = accel.tensor(np.array([[3.0]], np.float32), backend=backend)
    assert float(scale_from_amax(amax, accel.float8_e4m3fn, 1).numpy()[0, 0]) == np.float32(3.0 * 2 / 448)


def test_block_amax_with_partial_edge_blocks(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((130, 300)).astype(np.float32)
    got = block_amax(accel.tensor(x, backend=backend), (128, 128)).numpy()
    want = np.array([[np.abs(x[i:i + 128, j:j + 128]).max() for j in range(0, 300, 128)] for i in range(0, 130, 128)])
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_quantize_dequantize_is_straight_through_for_gradients(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    ct = rng.uniform(0.5, 2.0, (3, 40)).astype(np.float32)
    scale = accel.tensor(np.float32(0.5), backend=backend)  # keeps ct·scale in e4m3fn's normal range

    def loss(x):
        q = ops.quantize_fp8(x, scale, accel.float8_e4m3fn)
        return ops.sum(ops.mul(ops.dequantize_fp8(q, scale), accel.tensor(ct, backend=backend)))

    gx = accel.grad(loss)(accel.tensor(x, backend=backend)).numpy()
    # the rounding counts as the identity; the cotangent itself passes through a float8 tensor
    # (dequantize's input), so it comes back within e4m3fn's half-ulp (2^-4 relative)
    assert gx.dtype == np.float32 and np.all(np.abs(gx - ct) <= 2 ** -4 * ct)
    assert np.abs(gx - ct).max() > 0  # it did pass through float8
