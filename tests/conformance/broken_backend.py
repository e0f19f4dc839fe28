"""Backend doubles for the conformance tests: the reference backend with its composite kernels
removed, and one with deliberately wrong kernels the suite must reject."""
import numpy as np

import accel
from accel import ops
from accel.backends.numpy.backend import NumpyBackend


class PrimitivesOnly(NumpyBackend):
    """The reference backend with every composite kernel removed: composites must decompose."""

    name = "numpy_primitives_only"
    is_reference = False
    kernels = {op: k for op, k in NumpyBackend.kernels.items() if op.is_primitive}
    inplace_kernels = {}


def _fp16_accumulating_matmul(a, b):
    """Accumulates in the storage dtype, one rounding per step: what the tables must reject."""
    if a.dtype != np.float16 or a.ndim != 2 or b.ndim != 2:
        return NumpyBackend.kernels[ops.matmul](a, b)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float16)
    for k in range(a.shape[1]):
        acc = (acc + np.outer(a[:, k], b[k, :]).astype(np.float16)).astype(np.float16)
    return acc


def _naive_softmax(x, *, axis=-1):
    """No max subtraction: exp overflows on large logits."""
    e = np.exp(x.astype(np.float32))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _saturating_cast(x, *, dtype, saturate=False):
    """Clamps float8_e4m3fn overflow to 448 although the op says NaN (unless saturate=True)."""
    if dtype is accel.float8_e4m3fn and x.dtype.kind == "f":
        x = np.clip(x.astype(np.float32), -448, 448)
    return NumpyBackend.kernels[ops.cast](x, dtype=dtype, saturate=saturate)


def _layout_blind_exp(x):
    """Reads the underlying buffer as if the input were contiguous: a stride bug."""
    base = x if x.base is None else x.base
    flat = np.asarray(base).reshape(-1)[: x.size]
    return NumpyBackend.kernels[ops.exp](flat.reshape(x.shape).copy()) if x.size else x.copy()


class Broken(NumpyBackend):
    name = "numpy_broken"
    is_reference = False
    kernels = {**NumpyBackend.kernels, ops.matmul: _fp16_accumulating_matmul, ops.softmax: _naive_softmax,
               ops.cast: _saturating_cast, ops.exp: _layout_blind_exp}
