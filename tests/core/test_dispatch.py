"""Dispatch: native kernel > decomposition > host fallback, counted; strict mode; checked mode."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.numpy.backend import NumpyBackend


class PartialBackend(NumpyBackend):
    """A chip that lacks `exp` and every fused composite, and runs matmul only in float32."""

    name = "partial_test"
    is_reference = False
    cpu_only = True
    kernels = {op: k for op, k in NumpyBackend.kernels.items()
               if op is not ops.exp and op.is_primitive}
    op_dtypes = {ops.matmul: (accel.float32,)}


@pytest.fixture()
def partial():
    accel.register_backend(PartialBackend)
    accel.reset_dispatch_stats()
    backend = accel.get_backend("partial_test")
    yield backend
    accel.set_strict(False)


def host(t):
    return np.asarray(t.numpy(), dtype=np.float64)


def test_composite_without_kernel_decomposes_and_is_counted(partial):
    x = accel.tensor([[1.0, 2.0, 3.0]], backend=partial)
    y = ops.softmax(x, -1)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(host(y)[0], e / e.sum(), rtol=1e-6)
    stats = accel.dispatch_stats()["partial_test"]
    assert stats["softmax"]["decomposed"] == 1


def test_missing_primitive_falls_back_to_host_counted_and_warned_once(partial):
    x = accel.tensor([0.0, 1.0], backend=partial)
    with pytest.warns(accel.AccelWarning, match="exp on partial_test falls back"):
        y = ops.exp(x)
    assert y.backend is partial
    np.testing.assert_allclose(host(y), np.exp([0.0, 1.0]), rtol=1e-6)
    ops.exp(x)
    assert accel.dispatch_stats()["partial_test"]["exp"]["fallback"] == 2


def test_strict_mode_turns_a_fallback_into_an_error_naming_the_fix(partial):
    x = accel.tensor([0.0, 1.0], backend=partial)
    with accel.strict():
        with pytest.raises(accel.UnsupportedError) as info:
            ops.exp(x)
    message = str(info.value)
    assert "exp on partial_test" in message and "float32[2]" in message and "HINT" in message


def test_dtype_the_backend_lacks_falls_back_with_the_reason(partial):
    a = accel.tensor(np.eye(2), dtype="float16", backend=partial)
    with pytest.warns(accel.AccelWarning, match="does not run it in float16"):
        out = ops.matmul(a, a)
    assert out.dtype is accel.float16 and out.backend is partial
    assert accel.dispatch_stats()["partial_test"]["matmul"]["fallback"] == 1


def test_mixing_backends_is_an_error_with_a_hint(partial):
    a = accel.tensor([1.0], backend=partial)
    b = accel.tensor([1.0], backend="numpy")
    with pytest.raises(accel.BackendError, match="different backends"):
        ops.add(a, b)


def test_checked_mode_validates_before_the_kernel():
    accel.set_checked(True)
    try:
        x = accel.tensor(np.ones((2, 3)), backend="numpy")
        assert ops.add(x, x).shape == (2, 3)
        with pytest.raises(accel.ShapeError, match=r"matmul\(float64\[2, 3\], float64\[2, 3\]\)"):
            ops.matmul(x, x)
    finally:
        accel.set_checked(False)


def test_native_exception_becomes_accel_error_with_op_shapes_and_hint(monkeypatch):
    # A library error on input the op's rule accepts (an out-of-range index is now caught by
    # the kernel itself, see tests/core/test_bad_op_input.py): a kernel whose library raises.
    backend = accel.get_backend("numpy")

    def library_refuses(x, indices, *, axis=0):
        raise ValueError("the library refuses")

    monkeypatch.setitem(type(backend).kernels, ops.gather, library_refuses)
    monkeypatch.setattr(backend, "_resolved", {})
    x = accel.tensor(np.ones((2, 3), np.float32), backend="numpy")
    idx = accel.tensor([1], backend="numpy")
    with pytest.raises(accel.OpError) as info:
        ops.gather(x, idx, 0)
    text = str(info.value)
    assert "gather(float32[2, 3], int64[1], axis=0) on numpy" in text and "HINT" in text
    assert "ValueError: the library refuses" in text


def test_unknown_argument_names_the_signature():
    x = accel.tensor([1.0], backend="numpy")
    with pytest.raises(accel.OpError, match=r"softmax\(x, axis=-1\)"):
        ops.softmax(x, dim=0)
