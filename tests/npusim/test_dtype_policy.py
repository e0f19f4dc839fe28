"""The dtype policy for what the chip cannot run: error (default), downcast, fallback."""
import warnings

import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.npusim import NpuSimBackend

from conftest import counts

RNG = np.random.default_rng(0)
A = RNG.standard_normal((5, 7)).astype(np.float32)
B = RNG.standard_normal((7, 3)).astype(np.float32)


def test_error_is_the_default_and_names_op_dtype_chip_and_the_way_out(minimal):
    assert minimal.dtype_policy == "error"
    a, b = accel.from_numpy(A, backend=minimal), accel.from_numpy(B, backend=minimal)
    with pytest.raises(accel.UnsupportedError) as info:
        ops.matmul(a, b)
    text = str(info.value)
    assert "matmul(float32[5, 7], float32[7, 3]) on npusim:minimal" in text
    assert "float16, bfloat16, int8, not float32" in text
    assert "downcast" in info.value.hint and "fallback" in info.value.hint


def test_downcast_computes_float32_matmul_in_bfloat16_counted_and_warned_once(minimal):
    minimal.configure(dtype_policy="downcast")
    a, b = accel.from_numpy(A, backend=minimal), accel.from_numpy(B, backend=minimal)
    with pytest.warns(accel.AccelWarning, match="computes float32 in bfloat16"):
        out = ops.matmul(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the second call is counted, not warned again
        ops.matmul(a, b)
    assert out.dtype is accel.float32
    assert counts(minimal, "matmul")["downcast"] == 2
    bf = ml_dtypes.bfloat16
    expected = (A.astype(bf).astype(np.float32) @ B.astype(bf).astype(np.float32)).astype(bf).astype(np.float32)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert np.abs(out.numpy() - A.astype(np.float64) @ B).max() > 1e-4, "really computed at bfloat16 precision"


def test_fallback_runs_on_the_host_counted_with_its_transfers_and_is_refused_in_strict_mode(minimal):
    minimal.configure(dtype_policy="fallback")
    a, b = accel.from_numpy(A, backend=minimal), accel.from_numpy(B, backend=minimal)
    before = minimal.counters()
    with pytest.warns(accel.AccelWarning, match="falls back to the host"):
        out = ops.matmul(a, b)
    after = minimal.counters()
    assert counts(minimal, "matmul")["fallback"] == 1
    assert after["d2h_bytes"] - before["d2h_bytes"] == A.nbytes + B.nbytes
    assert after["h2d_bytes"] - before["h2d_bytes"] == out.nbytes
    np.testing.assert_allclose(out.numpy(), A.astype(np.float64) @ B, rtol=1e-5, atol=1e-6)
    with accel.strict(), pytest.raises(accel.UnsupportedError, match="strict mode forbids"):
        ops.matmul(a, b)


def test_a_composite_the_chip_cannot_run_in_that_dtype_decomposes_first(ascend):
    q = accel.from_numpy(RNG.standard_normal((1, 2, 3, 4)).astype(np.float32), backend=ascend)
    out = ops.attention(q, q, q, causal=True)     # the fused kernel takes float16/bfloat16 only
    assert counts(ascend, "attention")["decomposed"] == 1
    assert out.dtype is accel.float32
    half = ops.attention(q.astype("bfloat16"), q.astype("bfloat16"), q.astype("bfloat16"), causal=True)
    assert counts(ascend, "attention")["decomposed"] == 1 and half.dtype is accel.bfloat16


def test_no_float64_anywhere(ascend):
    x = accel.from_numpy(np.ones(3, np.float64), backend=ascend)   # storage is fine
    with pytest.raises(accel.UnsupportedError, match="not float64"):
        ops.exp(x)
    y = accel.from_numpy(np.ones(3, np.float32), backend=ascend)
    with pytest.raises(accel.UnsupportedError, match="float64"):
        ops.cast(y, accel.float64)
    with pytest.raises(accel.UnsupportedError, match="float64"):
        ops.full((2,), 1.0, accel.float64, ascend)
    assert accel.float64 not in ascend.dtypes


def test_policy_from_the_environment_and_bad_values(monkeypatch):
    monkeypatch.setenv("ACCEL_NPUSIM_DTYPE_POLICY", "downcast")
    assert NpuSimBackend("minimal").dtype_policy == "downcast"
    monkeypatch.setenv("ACCEL_NPUSIM_DTYPE_POLICY", "yolo")
    with pytest.raises(accel.BackendError, match="unknown dtype policy 'yolo'"):
        NpuSimBackend("minimal")
    monkeypatch.delenv("ACCEL_NPUSIM_DTYPE_POLICY")
    with pytest.raises(accel.BackendError, match="error, downcast, fallback"):
        NpuSimBackend("minimal").configure(dtype_policy="maybe")


def test_downcast_that_has_no_narrower_dtype_still_errors(minimal):
    minimal.configure(dtype_policy="downcast")
    x = accel.from_numpy(np.ones(3, np.float32), backend=minimal)
    with pytest.raises(accel.UnsupportedError, match="dtype_policy='downcast'"):
        ops.cast(x, accel.float8_e4m3fn)     # an unsupported target dtype cannot be narrowed
