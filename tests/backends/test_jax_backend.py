"""The JAX backend's own contract: device names, x64, precision, the semantics jax does not
share by default (gather bounds, float8 overflow, first-NaN argmax), and jax.jit compilation."""
import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops

jax = pytest.importorskip("jax")


@pytest.fixture(scope="module")
def jx():
    return accel.get_backend("jax:cpu")


def test_device_names_follow_what_jax_reports(jx):
    status = accel.available_backends()["jax"]
    assert status.available and "cpu" in status.devices
    assert accel.get_backend("jax:cpu:0").jax_device.platform == "cpu"
    with pytest.raises(accel.BackendError, match="no device 'npu'"):
        accel.get_backend("jax:npu")
    facts = jx.device_facts()
    assert facts["platform"] == "cpu" and facts["matmul_precision"] == "highest"


def test_x64_gives_real_float64_and_int64(jx):
    x = accel.tensor(np.array([1.0 + 2 ** -40]), backend=jx)
    assert x.dtype is accel.float64 and (x + 1.0).numpy()[0] == 2.0 + 2 ** -40
    big = accel.tensor(np.array([2 ** 40], np.int64), backend=jx)
    assert (big * 2).numpy()[0] == 2 ** 41 and (big * 2).dtype is accel.int64


def test_eager_gather_out_of_range_raises_instead_of_clamping(jx):
    table = accel.tensor(np.arange(6, dtype=np.float32).reshape(3, 2), backend=jx)
    np.testing.assert_array_equal(ops.gather(table, accel.tensor([2, 0], backend=jx)).numpy(), [[4, 5], [0, 1]])
    for bad in (3, -1):  # XLA would clamp 3 and wrap -1; accel refuses both
        with pytest.raises(accel.IndexOutOfRangeError, match=f"index {bad} is out of range"):
            ops.gather(table, accel.tensor([bad], backend=jx))


def test_float8_cast_overflow_and_saturation_match_ml_dtypes(jx):
    values = np.array([1000.0, 464.0, 465.0, -500.0, np.inf, -np.inf, np.nan, 0.3], np.float32)
    x = accel.tensor(values, backend=jx)
    for target, np_type in ((accel.float8_e4m3fn, ml_dtypes.float8_e4m3fn),
                            (accel.float8_e5m2, ml_dtypes.float8_e5m2)):
        got = ops.cast(x, target).numpy()
        want = values.astype(np_type)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    saturated = ops.cast(x, accel.float8_e4m3fn, saturate=True).numpy().astype(np.float32)
    np.testing.assert_array_equal(saturated[:4], [448, 448, 448, -448])
    assert np.isnan(saturated[6]) and saturated[4] == 448


def test_divisions_in_one_jit_stay_correctly_rounded(jx):
    # In one XLA computation (a / 448) / r would become a / (448 · r) and a division by a
    # broadcast divisor a multiplication by its reciprocal: 1133 of these 2048 quotients move
    # (701 from the first rewrite alone).
    x = np.random.default_rng(3).uniform(0.5, 2.0, (64, 32)).astype(np.float32)
    rows = np.linspace(0.3, 3.0, 64, dtype=np.float32).reshape(64, 1)
    fast = accel.compile(lambda a, r: ops.div(ops.div(a, 448.0), r))
    got = fast(accel.tensor(x, backend=jx), accel.tensor(rows, backend=jx)).numpy()
    assert fast.signatures()[0].runner == "backend"
    once = (x.astype(np.float64) / 448.0).astype(np.float32)
    want = (once.astype(np.float64) / rows).astype(np.float32)  # each division rounded once
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_argmax_takes_the_first_max_and_nan_wins(jx):
    x = accel.tensor(np.array([[1.0, 3.0, 3.0], [np.nan, 5.0, np.nan]], np.float32), backend=jx)
    np.testing.assert_array_equal(ops.argmax(x, -1).numpy(), [1, 0])
    assert ops.argmax(x, -1).dtype is accel.int64


def test_matmul_precision_is_highest_by_default_and_configurable(jx):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 256)).astype(np.float32), rng.standard_normal((256, 32)).astype(np.float32)
    got = ops.matmul(accel.tensor(a, backend=jx), accel.tensor(b, backend=jx)).numpy()
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.sum((got - want) ** 2) / np.sum(want ** 2) < 1e-12
    with pytest.raises(accel.OpError, match="unknown jax matmul precision"):
        jx.set_matmul_precision("sloppy")


def test_index_copy_is_functional_and_index_copy_inplace_rebinds(jx):
    assert jx.inplace_kernels == {}
    cache = accel.tensor(np.zeros((2, 4), np.float32), backend=jx)
    before = cache.data
    cache.index_copy_(1, accel.tensor([2], backend=jx), accel.tensor(np.ones((2, 1), np.float32), backend=jx))
    assert cache.data is not before and np.asarray(before).sum() == 0
    np.testing.assert_array_equal(cache.numpy()[:, 2], [1, 1])


def test_compile_uses_one_jit_and_donates_the_updated_input(jx):
    def step(cache, pos, x):
        cache.index_copy_(0, pos, ops.exp(x))
        return ops.sum(cache, -1)

    fast = accel.compile(step)
    cache = accel.tensor(np.zeros((4, 3), np.float32), backend=jx)
    for i in range(3):
        out = fast(cache, ops.arange(i, i + 1, backend=jx), accel.tensor(np.full((1, 3), float(i), np.float32), backend=jx))
    entry = fast.signatures()[0]
    assert entry.runner == "backend" and hasattr(entry.run, "jitted")
    np.testing.assert_allclose(out.numpy(), [3, 3 * np.e, 3 * np.e ** 2, 0], rtol=1e-6)
    np.testing.assert_allclose(cache.numpy()[2], [np.e ** 2] * 3, rtol=1e-6)
    assert fast.stats.traces == 1
