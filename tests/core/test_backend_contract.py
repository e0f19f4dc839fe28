"""The backend contract: what a plugin declares is what its kernels see.

A recording plugin stores float32, bool and int64 only. Every kernel call and every host
transfer into it is recorded; whatever runs (where with scalars, casts, creation, random numbers,
a small Llama forward), no kernel ever receives or returns a dtype the plugin did not declare,
and what it cannot run goes to the host, counted in the dispatcher's fallback counters.
"""
from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.numpy.backend import NumpyBackend
from accel.core import dispatch
from accel.core.backend import Backend
from accel.core.dtypes import bool_, float32, from_numpy_dtype, int64
from accel.core.errors import BackendError, UnsupportedError
from accel.core.registry import register_backend

DECLARED = (float32, bool_, int64)


class Recording(Backend):
    """Numpy kernels behind a float32/bool/int64 plugin that records every dtype it meets."""

    name = "recording"
    priority = -100
    cpu_only = True
    dtypes = DECLARED
    # casts only to float32 or bool natively, creation in float32 only: the rest goes to the host
    op_outputs = {ops.cast: (float32, bool_)}
    op_dtypes = {ops.full: (float32,), ops.arange: (float32,)}
    seen: list = []  # (what, dtype name) of every kernel input and output and host transfer

    kernels = {}

    def from_numpy(self, array):
        self.seen.append(("from_numpy", np.asarray(array).dtype.name))
        return np.array(array, copy=True)  # np.array keeps a 0-d array 0-d

    def to_numpy(self, native):
        return np.asarray(native)

    def dtype_of(self, native):
        return from_numpy_dtype(native.dtype)


def _recorded(op, kernel):
    def run(*args, **attrs):
        for a in (args[0] if op.variadic else args):
            if a is not None:
                Recording.seen.append((f"{op.name} input", np.asarray(a).dtype.name))
        assert attrs.get("device", "cpu") == "cpu"
        out = kernel(*args, **attrs)
        Recording.seen.append((f"{op.name} output", np.asarray(out).dtype.name))
        return out
    return run


Recording.kernels = {op: _recorded(op, k) for op, k in NumpyBackend.kernels.items()}


@pytest.fixture
def rec():
    register_backend(Recording)
    Recording.seen.clear()
    dispatch.stats.reset()
    yield accel.get_backend("recording")
    undeclared = sorted({entry for entry in Recording.seen if entry[1] not in {d.name for d in DECLARED}})
    assert not undeclared, f"the plugin saw dtypes it did not declare: {undeclared}"


def _fallbacks(backend) -> dict:
    return {op: c["fallback"] for op, c in accel.dispatch_stats().get(backend.spec, {}).items() if c["fallback"]}


def test_no_kernel_sees_an_undeclared_dtype(rec):
    x = accel.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), backend=rec)
    cond = ops.gt(x, 0.0)
    np.testing.assert_array_equal(ops.where(cond, x, 1.0).numpy(), np.where(x.numpy() > 0, x.numpy(), 1.0))
    np.testing.assert_array_equal(ops.where(cond, 2.0, x).numpy(), np.where(x.numpy() > 0, 2.0, x.numpy()))
    # cast: float32 and bool targets natively, int64 on the host (counted), float64 refused
    assert ops.cast(x, accel.bool_).numpy().tolist() == (np.trunc(x.numpy()) != 0).tolist()  # truncates first
    as_int = ops.cast(x, accel.int64)
    assert as_int.dtype is accel.int64 and as_int.numpy().tolist() == [[-1, 0, 0], [0, 0, 1]]
    with pytest.raises(UnsupportedError, match="float64"):
        ops.cast(x, accel.float64)
    # creation: full/arange in float32 natively with the device, int64 on the host
    assert ops.full((2,), 1.5, accel.float32, rec).numpy().tolist() == [1.5, 1.5]
    assert ops.arange(0.0, 2.0, 0.5, dtype=accel.float32, backend=rec).numpy().tolist() == [0, 0.5, 1, 1.5]
    assert ops.arange(4, backend=rec).numpy().tolist() == [0, 1, 2, 3]
    assert ops.full((2,), 3, accel.int64, rec).numpy().tolist() == [3, 3]
    r = ops.random_normal((1000,), seed=7, dtype=accel.float32, backend=rec).numpy()
    assert r.dtype == np.float32 and abs(float(r.mean())) < 0.1 and abs(float(r.std()) - 1) < 0.1
    with pytest.raises(UnsupportedError, match="float64"):
        ops.random_normal((3,), seed=7, dtype=accel.float64, backend=rec)
    assert _fallbacks(rec) == {"cast": 1, "arange": 1, "full": 1}


def test_a_small_model_forward_stays_in_declared_dtypes(rec):
    from accel.models import LlamaModel, init_params
    from accel.models.presets import preset

    config = preset("micro", vocab_size=64)
    ids = [[1, 5, 9, 2, 7]]
    want = LlamaModel(config, init_params(config, seed=1, backend="numpy")).forward(ids).numpy()
    model = LlamaModel(config, init_params(config, seed=1, backend=rec))
    got = model.forward(ids).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert any(what.endswith("input") for what, _ in Recording.seen), "the kernels really ran"


def test_an_old_contract_plugin_fails_at_registration_naming_the_fix():
    class NoDtypeOf(Recording):
        name = "old_no_dtype_of"
        dtype_of = None
    NoDtypeOf.__abstractmethods__ = frozenset({"dtype_of"})
    with pytest.raises(BackendError, match="does not implement dtype_of"):
        register_backend(NoDtypeOf)

    class FloatOnly(Recording):
        name = "old_float_only"
        dtypes = (float32,)
    with pytest.raises(BackendError, match="without bool and int64"):
        register_backend(FloatOnly)

    class OldCreation(Recording):
        name = "old_creation"
        kernels = {**Recording.kernels, ops.full: lambda *, shape, value, dtype: np.full(shape, value, dtype.numpy)}
    with pytest.raises(BackendError, match="kernel for full does not take `device`"):
        register_backend(OldCreation)


def test_conformance_reports_undeclared_dtypes_as_unsupported_never_passed(rec):
    from accel.conformance.runner import run_suite

    result = run_suite(rec, op_names=["where", "cast", "random_normal", "full", "arange", "add"],
                       dtype_names=["float32", "float64"], quick=True, ci=True)
    by_dtype = {d: {r.status for r in result.rows if r.dtype == d} for d in ("float32", "float64")}
    assert by_dtype["float64"] == {"unsupported"}, by_dtype
    assert "pass" in by_dtype["float32"] and "fail" not in by_dtype["float32"], by_dtype
