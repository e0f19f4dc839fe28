"""Declared op semantics on hand-computed values, per backend (`pytest --backend NAME`).

The generated conformance cases (tests/conformance) sweep shapes, dtypes and values against
numpy float64; these pin the edge semantics that the op declarations promise in words: float8
overflow, round-half-to-even, truncation, signed zeros, NaN propagation, masked attention rows,
ignored targets, first-index argmax. Expected values are written out by hand.
"""
import math

import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops


def skips_unsupported(test):
    """A backend may declare that it cannot run a dtype (UnsupportedError): that is a skip."""
    import functools

    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except accel.UnsupportedError as exc:
            pytest.skip(f"the backend declares it cannot run this: {str(exc).splitlines()[0]}")
    return run


def t(backend, values, dtype="float32"):
    return accel.tensor(values, dtype=dtype, backend=backend)


def host(x):
    return np.asarray(accel.asnumpy(x)).astype(np.float64) if x.dtype.is_floating else accel.asnumpy(x)


# --- cast -------------------------------------------------------------------------------------
@skips_unsupported
def test_cast_float8_overflow_rules(backend):
    x = t(backend, [500.0, -1e6, 448.0, 460.0])
    e4m3 = host(ops.cast(x, accel.float8_e4m3fn))
    assert np.isnan(e4m3[0]) and np.isnan(e4m3[1]), "e4m3fn has no infinity: overflow is NaN"
    assert e4m3[2] == 448.0 and e4m3[3] == 448.0, "460 is within half an ulp (16) of 448"
    sat = host(ops.cast(x, accel.float8_e4m3fn, saturate=True))
    np.testing.assert_array_equal(sat, [448.0, -448.0, 448.0, 448.0])
    e5m2 = host(ops.cast(t(backend, [1e5, -1e5, 57344.0]), accel.float8_e5m2))
    np.testing.assert_array_equal(e5m2, [np.inf, -np.inf, 57344.0])


@skips_unsupported
def test_cast_rounds_half_to_even(backend):
    # bfloat16 has 7 fraction bits: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 -> 1 (even);
    # 1 + 3*2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6 -> 1 + 2^-6 (even).
    x = t(backend, [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)])
    np.testing.assert_array_equal(host(ops.cast(x, accel.bfloat16)), [1.0, 1 + 2 ** -6, -1.0])
    # float16 -> e4m3fn (3 fraction bits): 1.0625 is halfway between 1 and 1.125 -> 1.0
    np.testing.assert_array_equal(host(ops.cast(t(backend, [1.0625, 1.1875], "float16"), accel.float8_e4m3fn)),
                                  [1.0, 1.25])


def test_cast_float_to_int_truncates_toward_zero(backend):
    x = t(backend, [2.7, -2.7, 0.5, -0.5, 100.0])
    np.testing.assert_array_equal(host(ops.cast(x, accel.int32)), [2, -2, 0, 0, 100])
    np.testing.assert_array_equal(host(ops.cast(t(backend, [0.0, -3.0, 7.0]), accel.bool_)), [False, True, True])


# --- division ----------------------------------------------------------------------------------
def test_div_by_a_broadcast_divisor_is_correctly_rounded(backend):
    # x * (1/y) rounds twice; for these x about half the quotients by 448 (and by 0.37 and the
    # per-row divisors) differ from x / y in the last bit, which moves a float8 code at a tie.
    # float64 division rounded to float32 is the correctly rounded float32 quotient.
    x = np.random.default_rng(3).uniform(0.5, 2.0, (64, 32)).astype(np.float32)
    rows = np.linspace(0.3, 3.0, 64, dtype=np.float32).reshape(64, 1)
    for y, tensor_y in [(448.0, 448.0), (0.37, t(backend, 0.37)), (rows, t(backend, rows))]:
        want = (x.astype(np.float64) / np.float32(y)).astype(np.float32)
        assert (x * (np.float32(1) / np.float32(y)) != want).mean() > 0.2  # the rewrite would show
        got = accel.asnumpy(ops.div(t(backend, x), tensor_y))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# --- signed zeros and NaN ----------------------------------------------------------------------
def test_signed_zeros(backend):
    z = t(backend, [0.0, -0.0])
    assert list(np.signbit(host(ops.neg(z)))) == [True, False]
    assert list(np.signbit(host(ops.abs(z)))) == [False, False]
    assert list(np.signbit(host(ops.sqrt(t(backend, [-0.0]))))) == [True]  # IEEE: sqrt(-0) = -0


def test_comparisons_with_nan_are_false_except_ne(backend):
    x, y = t(backend, [np.nan, 1.0, np.nan]), t(backend, [1.0, np.nan, np.nan])
    for op in (ops.eq, ops.lt, ops.gt, ops.le, ops.ge):
        assert host(op(x, y)).tolist() == [False, False, False], op.name
    assert host(ops.ne(x, y)).tolist() == [True, True, True]


def test_maximum_minimum_and_max_propagate_nan(backend):
    x, y = t(backend, [np.nan, 1.0, 2.0]), t(backend, [0.0, np.nan, 3.0])
    assert np.isnan(host(ops.maximum(x, y))[:2]).all() and host(ops.maximum(x, y))[2] == 3.0
    assert np.isnan(host(ops.minimum(x, y))[:2]).all() and host(ops.minimum(x, y))[2] == 2.0
    assert np.isnan(host(ops.max(t(backend, [1.0, np.nan, 5.0])))).all()


def test_argmax_returns_the_first_maximum_and_nan_wins(backend):
    assert host(ops.argmax(t(backend, [3.0, 7.0, 7.0, 1.0]))).item() == 1
    assert host(ops.argmax(t(backend, [3.0, np.nan, 9.0, np.nan]))).item() == 1
    assert host(ops.argmax(t(backend, [[1, 5], [5, 5]], "int32"), 0)).tolist() == [1, 0]


# --- reductions in low precision ----------------------------------------------------------------
@skips_unsupported
def test_mean_of_float8_does_not_underflow_or_overflow(backend):
    # 4096 values of 1.0: sum 4096 overflows e4m3fn (448) and 1/4096 underflows it (min 2^-9);
    # the mean must still be 1.0 (the decomposition computes in float32 and rounds once).
    x = accel.from_numpy(np.ones(4096, ml_dtypes.float8_e4m3fn), backend=backend)
    assert host(ops.mean(x)).item() == 1.0
    y = accel.from_numpy(np.full(33, 20.0, ml_dtypes.float8_e4m3fn), backend=backend)
    assert host(ops.mean(y)).item() == 20.0


def test_softmax_of_large_logits_is_finite(backend):
    x = t(backend, [[1e4, -1e4, 1e4 - 1.0]])
    e = math.exp(-1.0)
    np.testing.assert_allclose(host(ops.softmax(x)), [[1 / (1 + e), 0.0, e / (1 + e)]], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(host(ops.log_softmax(x))[0, [0, 2]], [-math.log1p(e), -1 - math.log1p(e)], rtol=1e-6)


# --- attention and cross-entropy ---------------------------------------------------------------
def test_fully_masked_attention_row_outputs_zeros(backend):
    q = t(backend, np.ones((1, 1, 2, 4)))
    k = t(backend, np.ones((1, 1, 3, 4)))
    v = t(backend, np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4))
    mask = t(backend, [[True, False, True], [False, False, False]], "bool")
    out = host(ops.attention(q, k, v, mask))
    np.testing.assert_allclose(out[0, 0, 0], [4.0, 5.0, 6.0, 7.0], rtol=1e-6)  # mean of rows 0 and 2
    np.testing.assert_array_equal(out[0, 0, 1], [0.0, 0.0, 0.0, 0.0])


def test_causal_attention_is_top_left_aligned(backend):
    # T=2 queries, S=3 keys: query 0 sees key 0 only, query 1 keys 0..1 (torch is_causal).
    q = t(backend, np.zeros((1, 1, 2, 2)))
    k = t(backend, np.zeros((1, 1, 3, 2)))
    v = t(backend, np.array([1.0, 2.0, 4.0]).reshape(1, 1, 3, 1))
    out = host(ops.attention(q, k, v, causal=True))
    np.testing.assert_allclose(out[0, 0, :, 0], [1.0, 1.5], rtol=1e-6)


def test_cross_entropy_ignores_targets_and_all_ignored_mean_is_nan(backend):
    logits = t(backend, [[0.0, 0.0], [0.0, math.log(3.0)]])
    # row 0: -log(1/2) = log 2; row 1 target 1: -log(3/4). Ignored targets add nothing.
    targets = accel.tensor([0, 1], dtype="int64", backend=backend)
    expected = (math.log(2.0) + math.log(4 / 3)) / 2
    assert host(ops.cross_entropy(logits, targets)).item() == pytest.approx(expected, rel=1e-6)
    some = accel.tensor([0, -100], dtype="int64", backend=backend)
    assert host(ops.cross_entropy(logits, some)).item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert host(ops.cross_entropy(logits, some, reduction="sum")).item() == pytest.approx(math.log(2.0), rel=1e-6)
    none = accel.tensor([-100, -100], dtype="int64", backend=backend)
    assert math.isnan(host(ops.cross_entropy(logits, none)).item())


def test_index_copy_is_functional(backend):
    x = t(backend, np.zeros((3, 2)))
    out = ops.index_copy(x, accel.tensor([2, 0], dtype="int64", backend=backend), t(backend, [[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(host(out), [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]])
    np.testing.assert_array_equal(host(x), np.zeros((3, 2)))
