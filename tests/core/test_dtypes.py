"""dtypes and the promotion rules (core tier: no backend other than the reference)."""
import ml_dtypes
import numpy as np
import pytest

import accel
from accel.core import dtypes as dt


def test_every_dtype_has_exact_numpy_storage():
    expected = {
        "float64": np.float64, "float32": np.float32, "float16": np.float16,
        "bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2, "int8": np.int8, "int32": np.int32,
        "int64": np.int64, "bool": np.bool_,
    }
    assert {d.name: d.numpy for d in dt.ALL_DTYPES} == {k: np.dtype(v) for k, v in expected.items()}


@pytest.mark.parametrize("spelling,expected", [
    ("bf16", dt.bfloat16), ("bfloat16", dt.bfloat16), (np.float16, dt.float16),
    (np.dtype("int32"), dt.int32), (ml_dtypes.float8_e5m2, dt.float8_e5m2), ("bool", dt.bool_),
])
def test_as_dtype_accepts_names_and_numpy_types(spelling, expected):
    assert dt.as_dtype(spelling) is expected


def test_unknown_dtype_is_an_accel_error_listing_the_choices():
    with pytest.raises(accel.DTypeError, match="float8_e4m3fn"):
        dt.as_dtype("float128")


@pytest.mark.parametrize("a,b,expected", [
    (dt.float16, dt.bfloat16, dt.float32),      # neither holds the other
    (dt.float8_e4m3fn, dt.float8_e5m2, dt.bfloat16),
    (dt.int8, dt.float16, dt.float16),
    (dt.int32, dt.int64, dt.int64),
    (dt.bool_, dt.int8, dt.int8),
    (dt.float32, dt.float64, dt.float64),
    (dt.bfloat16, dt.float32, dt.float32),
])
def test_promotion_is_symmetric_and_follows_the_lattice(a, b, expected):
    assert dt.promote(a, b) is expected
    assert dt.promote(b, a) is expected


def test_python_scalars_are_weak():
    assert dt.result_type_with_scalar(dt.bfloat16, 2.5) is dt.bfloat16
    assert dt.result_type_with_scalar(dt.int8, 3) is dt.int8
    assert dt.result_type_with_scalar(dt.int32, 0.5) is dt.float32
    assert dt.result_type_with_scalar(dt.bool_, 1) is dt.int64


def test_binary_ops_apply_promotion_for_every_backend():
    a = accel.tensor([1, 2], dtype="int32", backend="numpy")
    b = accel.tensor([0.5, 0.25], dtype="float16", backend="numpy")
    out = a + b
    assert out.dtype is dt.float16
    np.testing.assert_array_equal(out.numpy().astype(np.float64), [1.5, 2.25])
    assert (a * 0.5).dtype is dt.float32
    assert (b * 3).dtype is dt.float16
