"""Bad input gives an AccelError that names the op, the backend, the shapes and dtypes, and
ends with a HINT line saying what to do — on every backend (`pytest --backend NAME`)."""
import numpy as np
import pytest

import accel
from accel import ops


def t(backend, shape, dtype="float32"):
    return accel.from_numpy(np.ones(shape, dtype=accel.as_dtype(dtype).numpy), backend=backend)


def check(error, *needles):
    text = str(error.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in message:\n{text}"
    assert "\nHINT: " in text and error.value.hint, text


def test_matmul_wrong_shapes(backend):
    with pytest.raises(accel.ShapeError) as error:
        ops.matmul(t(backend, (2, 3)), t(backend, (4, 5)))
    check(error, "matmul", "[2, 3]", "[4, 5]", "float32", backend.spec)


def test_add_shapes_that_do_not_broadcast(backend):
    with pytest.raises(accel.ShapeError) as error:
        ops.add(t(backend, (3, 4)), t(backend, (5,)))
    check(error, "add", "(3, 4)", "(5,)", backend.spec)


def test_float_op_on_integers(backend):
    with pytest.raises(accel.DTypeError) as error:
        ops.exp(t(backend, (3,), "int64"))
    check(error, "exp", "int64", "[3]", backend.spec, "cast")


def test_where_condition_not_bool(backend):
    with pytest.raises(accel.DTypeError) as error:
        ops.where(t(backend, (2,), "float32"), t(backend, (2,)), t(backend, (2,)))
    check(error, "where", "bool", "float32")


def test_attention_wrong_rank(backend):
    with pytest.raises(accel.ShapeError) as error:
        ops.attention(t(backend, (2, 3, 4)), t(backend, (2, 3, 4)), t(backend, (2, 3, 4)))
    check(error, "attention", "[2, 3, 4]", "(B, H, T, D)")


def test_embedding_float_ids(backend):
    # Checked mode validates every call first: plain eager mode trusts a native kernel that
    # accepts float ids (torch's does), so the rule is what gives the same answer everywhere.
    accel.set_checked(True)
    try:
        with pytest.raises(accel.DTypeError) as error:
            ops.embedding(t(backend, (10, 4)), t(backend, (3,), "float32"))
    finally:
        accel.set_checked(False)
    check(error, "embedding", "float32", "int64")


def test_linear_mismatched_weight(backend):
    with pytest.raises(accel.ShapeError) as error:
        ops.linear(t(backend, (2, 8)), t(backend, (4, 7)))
    check(error, "linear", "[2, 8]", "[4, 7]")


def test_reshape_wrong_element_count(backend):
    with pytest.raises(accel.ShapeError) as error:
        ops.reshape(t(backend, (2, 3)), (4, 2))
    check(error, "reshape", "(4, 2)", "6")


def test_unknown_backend_lists_what_is_installed():
    with pytest.raises(accel.BackendError) as error:
        accel.get_backend("no_such_chip")
    check(error, "no_such_chip", "numpy", "pip install")


def test_unknown_op_in_the_suite():
    from accel.conformance.runner import run_suite

    with pytest.raises(accel.OpError) as error:
        run_suite("numpy", op_names=["no_such_op"])
    check(error, "no_such_op", "softmax")
