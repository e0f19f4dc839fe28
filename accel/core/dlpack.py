"""DLPack interop: `accel.from_dlpack` wraps another library's array as an accel.Tensor, sharing
its memory where both libraries allow it.

A backend that imports DLPack itself overrides `Backend.from_dlpack(obj) -> native` (the torch
backend does: zero-copy from numpy, jax, cupy and torch arrays on the same device). For the
others (the hook returns None) the array comes through numpy: zero-copy for host memory when the backend's `from_numpy` keeps the
array (the numpy backend does), a copy otherwise. A copy is never an error: it is what moving
between devices or libraries without a shared allocator costs.
"""
from __future__ import annotations

import numpy as np

from accel.core.errors import AccelError
from accel.core.registry import get_backend
from accel.core.tensor import Tensor


def from_dlpack(obj, backend=None) -> Tensor:
    """An accel.Tensor on `backend` (default: the current backend) holding `obj`'s data.

    `obj` is anything with `__dlpack__`: torch, jax, numpy or cupy arrays, or an accel Tensor
    (to move it to another backend without a host round trip where the libraries allow).
    """
    target = get_backend(backend)
    source = obj.data if isinstance(obj, Tensor) else obj
    if isinstance(obj, Tensor) and obj.backend is target:
        return obj
    if not hasattr(source, "__dlpack__"):
        raise AccelError(f"from_dlpack: {type(obj).__name__} does not implement __dlpack__",
                         hint="pass a torch/jax/numpy/cupy array, or copy with accel.tensor(data)")
    try:
        native = target.from_dlpack(source)
    except (BufferError, TypeError, RuntimeError, ValueError):
        native = None  # e.g. a dtype DLPack cannot carry: go through the host below
    if native is not None:
        return Tensor(native, target)
    return Tensor(target.from_numpy(_host_array(obj, source)), target)


def _host_array(obj, source) -> np.ndarray:
    if isinstance(obj, Tensor):
        return obj.numpy()  # the source backend's own host view (handles bfloat16/float8)
    if isinstance(source, np.ndarray):
        return source
    try:
        return np.from_dlpack(source)
    except (BufferError, TypeError, RuntimeError, ValueError) as exc:
        raise AccelError(f"from_dlpack: numpy cannot import {type(obj).__name__} ({exc})",
                         hint="wrap it as an accel.Tensor on its own backend first, or pass a "
                              "backend that imports DLPack itself (e.g. backend='torch:cpu')") from exc
