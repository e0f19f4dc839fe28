"""FP8 GEMMs: SQNR on N(0,1) data per recipe, outlier channels/tokens where block/row-wise scaling
beats tensor-wise, fp8_linear against an independent numpy emulation, and its VJP."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops
from accel.ops.fp8 import FLOAT8_MAX, gemm_blocks
from accel.precision import get_recipe, sqnr_db

M, K, N = 64, 512, 96


def _exact(x, w):
    return np.asarray(x, np.float64) @ np.asarray(w, np.float64).T


def _fp8(backend, x, w, recipe):
    y = ops.fp8_linear(accel.tensor(x, backend=backend), accel.tensor(w, backend=backend), **get_recipe(recipe).op_attrs())
    return y.numpy()


def _np_quantize(v, ml, block):
    """Independent numpy/ml_dtypes block quantization (dequantized back to float64)."""
    v = np.asarray(v, np.float32)
    r, c = v.shape
    br = r if block[0] in (-1,) or block[0] >= r else block[0]
    bc = c if block[1] in (-1,) or block[1] >= c else block[1]
    out = np.empty((r, c), np.float64)
    top = np.float32(FLOAT8_MAX[accel.as_dtype(ml)])
    for i in range(0, r, br):
        for j in range(0, c, bc):
            blk = v[i:i + br, j:j + bc]
            amax = np.float32(np.abs(blk).max())
            s = np.float32(amax / top) if amax > 0 else np.float32(1.0)
            out[i:i + br, j:j + bc] = np.clip(blk / s, -top, top).astype(ml).astype(np.float64) * np.float64(s)
    return out


@pytest.mark.parametrize("recipe,floor_db", [("tensorwise_current", 20.0), ("rowwise", 20.0), ("blockwise", 25.0)])
def test_sqnr_on_normal_data(backend, recipe, floor_db):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    assert sqnr_db(_fp8(backend, x, w, recipe), _exact(x, w)) > floor_db


def test_outlier_channels_blockwise_beats_tensorwise_by_10db(backend):
    # A few input channels ~1e5 larger (the LLM.int8 / SmoothQuant observation), their weights
    # correspondingly small so every channel matters to the output: one tensor-wise scale
    # pushes the ordinary channels into e4m3's subnormals; 1x128 tiles confine the damage.
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    x[:, :4] *= 1e5
    w[:, :4] *= 1e-5
    ref = _exact(x, w)
    tensor = sqnr_db(_fp8(backend, x, w, "tensorwise_current"), ref)
    block = sqnr_db(_fp8(backend, x, w, "blockwise"), ref)
    assert block >= tensor + 10.0, (tensor, block)


def test_outlier_tokens_rowwise_beats_tensorwise_by_10db(backend):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    x[:3] *= 1e5  # three outlier tokens: per-token scales isolate them
    ref = _exact(x, w)
    tensor = sqnr_db(_fp8(backend, x, w, "tensorwise_current")[3:], ref[3:])
    row = sqnr_db(_fp8(backend, x, w, "rowwise")[3:], ref[3:])
    assert row >= tensor + 10.0, (tensor, row)


@pytest.mark.parametrize("recipe", ["tensorwise_current", "rowwise", "blockwise"])
def test_forward_matches_an_independent_emulation(backend, recipe):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 200)).astype(np.float32), rng.standard_normal((33, 200)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    r = get_recipe(recipe)
    blocks = gemm_blocks(r.granularity, r.block)
    want = _np_quantize(x.reshape(10, 200), ml_dtypes.float8_e4m3fn, blocks["x"]) @ \
        _np_quantize(w, ml_dtypes.float8_e4m3fn, blocks["w"]).T + b
    got = ops.fp8_linear(*(accel.tensor(a, backend=backend) for a in (x, w, b)), **r.op_attrs()).numpy()
    assert got.shape == (2, 5, 33)
    # same quantized values; only float32 accumulation order differs
    np.testing.assert_allclose(got.reshape(10, 33), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("recipe", ["tensorwise_current", "rowwise", "blockwise"])
def test_vjp_runs_both_backward_gemms_in_fp8(backend, recipe):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((12, 160)).astype(np.float32), rng.standard_normal((40, 160)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    seed = rng.standard_normal((12, 40)).astype(np.float32)
    r = get_recipe(recipe)
    blocks = gemm_blocks(r.granularity, r.block)
    gml = ml_dtypes.float8_e5m2 if r.grad_dtype is accel.float8_e5m2 else ml_dtypes.float8_e4m3fn

    def loss(x, w, b):
        return ops.sum(ops.mul(ops.fp8_linear(x, w, b, **r.op_attrs()), accel.tensor(seed, backend=backend)))

    gx, gw, gb = accel.grad(loss, (0, 1, 2))(*(accel.tensor(a, backend=backend) for a in (x, w, b)))
    want_gx = _np_quantize(seed, gml, blocks["g_dx"]) @ _np_quantize(w, ml_dtypes.float8_e4m3fn, blocks["w_dx"])
    want_gw = _np_quantize(seed, gml, blocks["g_dw"]).T @ _np_quantize(x, ml_dtypes.float8_e4m3fn, blocks["x_dw"])
    np.testing.assert_allclose(gx.numpy(), want_gx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gw.numpy(), want_gw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb.numpy(), seed.sum(0), rtol=1e-5, atol=1e-5)
    # and the FP8 gradients are close to the exact ones (the point of the recipe)
    assert sqnr_db(gx.numpy(), seed.astype(np.float64) @ w) > 15.0
    assert sqnr_db(gw.numpy(), seed.T.astype(np.float64) @ x) > 15.0


def test_block_scaled_matmul_against_per_block_partial_sums(backend):
    # DeepSeek-V3's promotion: Σ over K-blocks of float32 partials times both blocks' scales
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 256)).astype(ml_dtypes.float8_e4m3fn)
    b = rng.standard_normal((256, 130)).astype(ml_dtypes.float8_e4m3fn)
    sa = rng.uniform(0.1, 2, (7, 2)).astype(np.float32)
    sb = rng.uniform(0.1, 2, (2, 2)).astype(np.float32)
    want = np.zeros((7, 130))
    for kb in range(2):
        part = a[:, kb * 128:(kb + 1) * 128].astype(np.float64) @ b[kb * 128:(kb + 1) * 128].astype(np.float64)
        want += part * sa[:, kb:kb + 1] * np.repeat(sb[kb:kb + 1], 128, 1)[:, :130]
    got = ops.block_scaled_matmul(*(accel.tensor(v, backend=backend) for v in (a, b, sa, sb))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
