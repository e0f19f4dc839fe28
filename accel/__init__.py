"""accel: a hardware-portable accelerator layer.

Model code is written once against `accel.ops`; a backend plugin implements the ops for one
kind of hardware. See docs/architecture.md for the layers, `accel info` for what is installed here.
"""
from __future__ import annotations

import numpy as _np

from accel.core.dtypes import (
    ALL_DTYPES, DType, as_dtype, bfloat16, bool_, float8_e4m3fn, float8_e5m2, float16, float32,
    float64, int8, int32, int64, promote,
)
from accel.core.errors import (
    AccelError, BackendError, DeviceError, DTypeError, IndexOutOfRangeError, ModelError, OpError,
    OutOfMemoryError, ShapeError, UnsupportedError,
)
from accel.core.backend import Backend, Capabilities, Probe
from accel.core.tensor import Tensor
from accel import ops
from accel.core.dispatch import AccelWarning, set_checked, set_strict, stats as _stats
from accel.autodiff.autograd import grad, stop_gradient, value_and_grad
from accel.core.registry import (
    available_backends, current_backend, get_backend, reference_backend, register_backend, use,
)
from accel.graph.compile import compile  # noqa: A001  (the function shadows the module name on purpose)
from accel.core.dlpack import from_dlpack

__version__ = "0.1.0"


def tensor(data, dtype=None, backend=None) -> Tensor:
    """Make a tensor on `backend` (default: the current one) from host data.

    Python floats default to float32, ints to int64; numpy arrays keep their dtype unless
    `dtype` is given. An accel.Tensor is copied to the backend (and cast) as needed.
    """
    target = get_backend(backend)
    if isinstance(data, Tensor):
        out = data.to(target)
        return out if dtype is None else out.astype(dtype)
    if dtype is not None:
        dtype = as_dtype(dtype)
        array = _np.asarray(data)
        if array.dtype != dtype.numpy:
            if dtype.itemsize < 4 and dtype.is_floating and array.dtype.kind in "fiu":
                array = array.astype(_np.float32)  # ml_dtypes rounds exactly from float32
            array = array.astype(dtype.numpy)
    else:
        array = _np.asarray(data)
        if array.dtype == _np.float64 and not isinstance(data, _np.ndarray):
            array = array.astype(_np.float32)  # Python floats default to float32, as in torch
        elif array.dtype.kind in "iu" and array.dtype != _np.int64 and not isinstance(data, _np.ndarray):
            array = array.astype(_np.int64)
    return Tensor(target.from_numpy(array), target)


def from_numpy(array: _np.ndarray, backend=None) -> Tensor:
    """An exact copy of a numpy (or ml_dtypes) array on `backend`."""
    target = get_backend(backend)
    return Tensor(target.from_numpy(_np.asarray(array)), target)


def asnumpy(t) -> _np.ndarray:
    """Host copy of a tensor as numpy (bfloat16/float8 as ml_dtypes arrays)."""
    if isinstance(t, Tensor):
        return t.numpy()
    return _np.asarray(t)


def backend_class_is_cpu_only(name: str) -> bool:
    from accel.core.registry import backend_class

    return backend_class(name).cpu_only


def dispatch_stats() -> dict:
    """{backend: {op: {native, decomposed, fallback, downcast}}}: how ops ran since the reset."""
    return _stats.snapshot()


def reset_dispatch_stats() -> None:
    _stats.reset()


class strict:
    """`with accel.strict():` host fallbacks raise UnsupportedError instead of running."""

    def __init__(self, on: bool = True):
        from accel.core.dispatch import mode

        self._previous = mode.strict
        set_strict(on)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        set_strict(self._previous)


def __getattr__(name: str):
    # `accel.models` (the Llama family) loads on first use, so `import accel` stays light.
    if name == "models":
        import importlib

        return importlib.import_module("accel.models")
    raise AttributeError(f"module 'accel' has no attribute {name!r}")
