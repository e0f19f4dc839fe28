"""The eager fast paths of the jax and onnxruntime backends give the same answers as the slow
ones: ONNX Runtime's per-call plans (keyed by input shapes, dtypes and attrs), its cached
read-only scalars and raw-byte outputs; jax's one-jit-per-kernel with static attributes."""
import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops


@pytest.fixture(scope="module")
def rt():
    pytest.importorskip("onnxruntime")
    return accel.get_backend("onnxruntime:cpu")


@pytest.fixture(scope="module")
def jx():
    pytest.importorskip("jax")
    return accel.get_backend("jax:cpu")


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_ort_plans_are_per_shape_and_a_repeat_reuses_one(rt):
    rt._plans.clear()
    for shape in ((2, 3), (5, 7), (2, 3)):
        a, b = _rand(shape, 1), _rand(shape, 2)
        got = ops.add(accel.tensor(a, backend=rt), accel.tensor(b, backend=rt)).numpy()
        np.testing.assert_allclose(got, a.astype(np.float64) + b, rtol=1e-6)
    assert len(rt._plans) == 2  # (2, 3) twice: one plan; both shapes share one rank-2 session


def test_ort_cached_scalars_are_shared_and_read_only(rt):
    half = rt.scalar(0.5, accel.float32)
    assert rt.scalar(0.5, accel.float32) is half and not half.flags.writeable
    with pytest.raises(ValueError):
        half[...] = 2.0
    assert np.signbit(rt.scalar(-0.0, accel.float32)) and not np.signbit(rt.scalar(0.0, accel.float32))
    a = _rand((3, 4))
    for _ in range(2):  # the second call reuses the cached scalar: still x + 0.5
        got = (accel.tensor(a, backend=rt) + 0.5).numpy()
        np.testing.assert_allclose(got, a.astype(np.float64) + 0.5, rtol=1e-6)


def test_ort_unhashable_attrs_run_without_a_plan(rt):
    a = _rand((2, 3))
    before = len(rt._plans)
    got = rt.kernels[ops.reshape](a, shape=[3, 2])  # a list cannot key a plan
    np.testing.assert_array_equal(got, a.reshape(3, 2))
    assert len(rt._plans) == before


def test_ort_set_provider_options_forgets_plans_and_sessions():
    from accel.backends.onnxruntime.backend import OnnxRuntimeBackend

    fresh = OnnxRuntimeBackend("cpu")
    a = _rand((2, 2))
    ops.exp(accel.tensor(a, backend=fresh))
    assert fresh._plans and fresh._sessions
    fresh.set_provider_options()
    assert not fresh._plans and not fresh._sessions
    got = ops.exp(accel.tensor(a, backend=fresh)).numpy()
    np.testing.assert_allclose(got, np.exp(a.astype(np.float64)), rtol=1e-6)


def test_ort_raw_byte_outputs_are_owned_writable_arrays_of_the_right_shape(rt):
    values = np.array([[1.5, -3.3], [448.0, 1e-3]], np.float32)
    out = ops.cast(accel.tensor(values, backend=rt), accel.bfloat16).numpy()
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (2, 2)
    assert out.flags.writeable and out.flags.owndata
    np.testing.assert_array_equal(out.view(np.uint16), values.astype(ml_dtypes.bfloat16).view(np.uint16))
    scalar = ops.cast(accel.tensor(np.array(2.5, np.float32), backend=rt), accel.float8_e4m3fn).numpy()
    assert scalar.shape == () and float(scalar.astype(np.float32)) == 2.5
    empty = ops.cast(accel.tensor(np.zeros((0, 3), np.float32), backend=rt), accel.bfloat16).numpy()
    assert empty.shape == (0, 3) and empty.dtype == ml_dtypes.bfloat16


def test_jax_list_attrs_become_hashable_before_the_jitted_kernel(jx):
    a = _rand((2, 8))
    x = accel.tensor(a, backend=jx)
    np.testing.assert_array_equal(ops.reshape(x, [4, 4]).numpy(), a.reshape(4, 4))
    np.testing.assert_array_equal(ops.permute(x, [1, 0]).numpy(), a.T)
    np.testing.assert_allclose(ops.sum(x, axis=[0, 1]).numpy(), a.astype(np.float64).sum(), rtol=1e-5)
    np.testing.assert_array_equal(ops.broadcast_to(accel.tensor(a[:1], backend=jx), [3, 8]).numpy(),
                                  np.broadcast_to(a[:1], (3, 8)))


def test_jax_matmul_precision_reaches_the_next_eager_call(jx):
    from accel.backends.jax import kernels as jax_kernels

    jitted = jax_kernels._matmul_jitted
    if not hasattr(jitted, "_cache_size"):
        pytest.skip("this jax does not expose the jit cache size")
    a = _rand((3, 5))
    x = accel.tensor(a, backend=jx)
    ops.matmul(x, x.permute(1, 0))
    seen = jitted._cache_size()
    try:
        jx.set_matmul_precision("default")
        got = ops.matmul(x, x.permute(1, 0)).numpy()
        assert jitted._cache_size() == seen + 1  # compiled anew for the new precision
    finally:
        jx.set_matmul_precision("highest")
    np.testing.assert_allclose(got, a.astype(np.float64) @ a.T, rtol=1e-2, atol=1e-2)
