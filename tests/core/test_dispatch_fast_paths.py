"""The eager hot path's shortcuts (same-dtype binary ops, cached reshape/permute preparation,
int-axis fast paths, tensor indexing in prepared form) keep every error an AccelError that names
the op, the backend and the shapes, and keep interceptors and checked mode seeing every call.
Expected values come from numpy on the same host data."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.core import dispatch
from accel.core import op as op_module
from accel.backends.numpy.backend import NumpyBackend


class OtherHost(NumpyBackend):
    """A second host backend, so that two tensors can live on different backends."""

    name = "other_host_test"
    is_reference = False
    cpu_only = True


def t(backend, array):
    return accel.from_numpy(np.asarray(array), backend=backend)


def message(info) -> str:
    text = str(info.value)
    assert "\nHINT: " in text and info.value.hint, text
    return text


@pytest.fixture()
def x(backend):
    return t(backend, np.arange(24, dtype=np.float32).reshape(2, 3, 4))


def test_same_dtype_binary_on_two_backends_is_still_a_backend_error(backend):
    accel.register_backend(OtherHost)
    a = t(backend, np.ones(3, np.float32))
    b = t("other_host_test", np.ones(3, np.float32))
    with pytest.raises(accel.BackendError, match="different backends") as info:
        ops.add(a, b)
    assert backend.spec in message(info)


def test_same_dtype_binary_with_a_host_array_names_the_input(backend):
    a = t(backend, np.ones(3, np.float32))
    with pytest.raises(accel.OpError, match="expected tensors or Python numbers") as info:
        ops.mul(a, np.ones(3, np.float32))
    assert f"mul(float32[3], float32[3]) on {backend.spec}" in message(info)


def test_same_dtype_shapes_that_do_not_broadcast(backend):
    a, b = t(backend, np.ones((3, 4), np.float32)), t(backend, np.ones((5,), np.float32))
    with pytest.raises(accel.ShapeError) as info:
        ops.sub(a, b)
    text = message(info)
    assert "sub(" in text and "[3, 4]" in text and "[5]" in text and backend.spec in text


def test_reshape_errors_survive_a_warm_cache(backend, x):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(ops.reshape(x, (4, -1)).numpy(), host.reshape(4, -1))
    np.testing.assert_array_equal(ops.reshape(x, [6, 4]).numpy(), host.reshape(6, 4))  # a list
    for bad in [(5, -1), (-2, -12), (-1, -1), (5, 5)]:
        for _ in range(2):  # the second call would hit a cache if errors were remembered
            with pytest.raises(accel.ShapeError) as info:
                ops.reshape(x, bad)
            text = message(info)
            assert "reshape(float32[2, 3, 4])" in text and backend.spec in text


def test_permute_rejects_non_int_axes_even_when_the_ints_are_cached(backend, x):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(ops.permute(x, (2, 0, 1)).numpy(), host.transpose(2, 0, 1))
    np.testing.assert_array_equal(ops.permute(x, [-1, 0, 1]).numpy(), host.transpose(2, 0, 1))
    for bad in [(2.0, 0.0, 1.0), (2, 0, 1.0), (0, 0, 1), (1, 0)]:
        with pytest.raises(accel.ShapeError) as info:
            ops.permute(x, bad)
        text = message(info)
        assert "permute(float32[2, 3, 4])" in text and backend.spec in text


@pytest.mark.parametrize("call", [
    lambda x, a: ops.sum(x, a), lambda x, a: ops.max(x, a, True),
    lambda x, a: ops.softmax(x, a), lambda x, a: ops.gather(x, accel.tensor([0], backend=x.backend), a),
], ids=["sum", "max", "softmax", "gather"])
def test_int_axis_fast_path_wraps_negatives_and_rejects_out_of_range(backend, x, call):
    np.testing.assert_array_equal(call(x, -1).numpy(), call(x, 2).numpy())
    np.testing.assert_array_equal(call(x, -3).numpy(), call(x, 0).numpy())
    for axis in (3, -4):  # numpy would not wrap these, but nothing may pass them on silently
        with pytest.raises(accel.ShapeError) as info:
            call(x, axis)
        text = message(info)
        assert "float32[2, 3, 4]" in text and backend.spec in text and f"axis {axis}" in text


KEYS = [slice(1, 2), 0, -1, (slice(None), -1), (Ellipsis, slice(1, 3)), (None, 0),
        (0, Ellipsis, None, 2), slice(None, None, 2), (1, slice(0, 3, 2), -2), slice(-5, 10),
        slice(2, 1), Ellipsis, (), slice(None)]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
def test_getitem_matches_numpy(backend, x, key):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(x[key].numpy(), host[key])


@pytest.mark.parametrize("key, text", [
    (5, "index 5 is out of range"), ((0, 0, 0, 0), "too many indices"),
    (slice(1.5, 2), "bad slice"), (slice(None, None, 0), "bad slice"),
    (slice(None, None, -1), "negative slice steps"), ((Ellipsis, Ellipsis), "one Ellipsis"),
    ("a", "unsupported index"),
])
def test_getitem_errors_name_the_tensor_and_backend(backend, x, key, text):
    with pytest.raises(accel.OpError) as info:
        x[key]
    shown = message(info)
    assert shown.startswith("getitem(float32[2, 3, 4], ") and backend.spec in shown and text in shown


def test_prepare_reading_a_host_list_says_to_wrap_it():
    with pytest.raises(accel.OpError, match="expected accel.Tensor inputs, got list"):
        ops.reshape([1.0, 2.0], (2,))


def test_interceptors_see_fast_path_calls_and_the_hot_path_comes_back(backend, x):
    seen = []

    def record(op, args, attrs):
        seen.append((op.name, dict(attrs)))
        return NotImplemented

    dispatch.push_interceptor(record)
    try:
        assert op_module._dispatch is not dispatch.eager
        ops.add(x, x)
        x[1:2]
        x[0]
    finally:
        dispatch.pop_interceptor(record)
    assert [name for name, _ in seen] == ["add", "slice", "slice", "reshape"]
    assert seen[1][1] == {"axes": (0, 1, 2), "starts": (1, 0, 0), "stops": (2, 3, 4), "steps": (1, 1, 1)}
    assert dispatch.mode.hook is None and op_module._dispatch is dispatch.eager


def test_checked_mode_validates_indexing_and_same_dtype_calls(backend, x):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    accel.set_checked(True)
    try:
        np.testing.assert_array_equal(x[:, 1].numpy(), host[:, 1])
        np.testing.assert_array_equal(ops.add(x, x).numpy(), host + host)
        with pytest.raises(accel.ShapeError, match=r"matmul\(float32\[2, 3, 4\], float32\[2, 3, 4\]\)"):
            ops.matmul(x, x)
    finally:
        accel.set_checked(False)
