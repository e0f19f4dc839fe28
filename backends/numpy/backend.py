"""The numpy reference backend: every primitive, every dtype, on the CPU.

bfloat16 and float8 are ml_dtypes arrays. Arithmetic on float16, bfloat16 and float8 is done in
float32 and rounded once to the storage dtype (what accelerators with float32 accumulators do),
so matmuls and reductions here are as accurate as a good fused kernel, not as poor as naive
low-precision accumulation. This backend is the host-fallback target and the suite's self-check.
"""
from __future__ import annotations

import math

import numpy as np

from accel import ops
from accel.core.backend import Backend, Probe
from accel.core.bounds import check_host_indices
from accel.backends._shared_kernels import LowPrecision
from accel.core.dtypes import LOW_PRECISION, from_numpy_dtype
from accel.ops.elementwise import cast_reference
from accel.ops.movement import slice_reference

_LOW_NUMPY = frozenset(d.numpy for d in LOW_PRECISION)
_F32 = np.dtype(np.float32)

try:  # scipy's erf is vectorised; math.erf per element is the exact fallback
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy comes with jax, but is not required
    _erf = np.vectorize(math.erf, otypes=[np.float64])


# float16/bfloat16/float8 compute in float32 and round once (y may be a numpy scalar: asarray).
_VIA_F32 = LowPrecision(_LOW_NUMPY, widen=lambda a: np.asarray(a).astype(_F32),
                        round_to=lambda y, dtype: y.astype(dtype))
_via_f32_unary, _via_f32_binary, _compare = _VIA_F32.unary, _VIA_F32.binary, _VIA_F32.compare


def _sum(x, *, axis=None, keepdims=False):
    if x.dtype in _LOW_NUMPY:
        return np.asarray(np.sum(x.astype(_F32), axis=axis, keepdims=keepdims)).astype(x.dtype)
    return np.asarray(np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype))


def _max(x, *, axis=None, keepdims=False):
    return np.asarray(np.max(x, axis=axis, keepdims=keepdims))


def _argmax(x, *, axis=-1, keepdims=False):
    src = x.astype(_F32) if x.dtype in _LOW_NUMPY else x
    if x.ndim == 0:
        return np.asarray(0, dtype=np.int64)
    return np.asarray(np.argmax(src, axis=axis, keepdims=keepdims), dtype=np.int64)


def _matmul(a, b):
    if a.dtype in _LOW_NUMPY:
        return np.matmul(a.astype(_F32), b.astype(_F32)).astype(a.dtype)
    return np.matmul(a, b)


def _cast(x, *, dtype, saturate=False):
    with np.errstate(invalid="ignore", over="ignore"):
        return cast_reference(x, dtype=dtype, saturate=saturate)


def _full(*, shape, value, dtype, device="cpu"):  # one host device: nothing to place
    return np.full(shape, value, dtype=dtype.numpy)


def _arange(*, start, stop, step, dtype, device="cpu"):
    return np.arange(start, stop, step, dtype=np.float64 if dtype.is_floating else np.int64).astype(dtype.numpy)


def _where(cond, x, y):
    return np.where(cond, x, y)


def _index_copy(x, index, values, *, axis=0):
    out = np.array(x, copy=True)
    _index_copy_inplace(out, index, values, axis=axis)
    return out


def _gather(x, indices, *, axis=0):
    check_host_indices(indices, x.shape[axis], axis=axis)
    return np.take(x, indices, axis=axis)


def _index_add(x, index, values, *, axis=0):
    """Scatter-add: float16/bfloat16 accumulate in float32 and round once; np.add.at sums repeats."""
    check_host_indices(index, x.shape[axis], axis=axis)
    wide = np.float32 if x.dtype.itemsize < 4 and x.dtype.kind != "i" else x.dtype
    out = np.array(x, dtype=wide, copy=True)
    sl = [slice(None)] * x.ndim
    sl[axis] = index
    np.add.at(out, tuple(sl), np.asarray(values, dtype=wide))
    return out.astype(x.dtype, copy=False)


def _index_copy_inplace(x, index, values, *, axis=0):
    check_host_indices(index, x.shape[axis], axis=axis)  # before writing: no partial update
    sl = [slice(None)] * x.ndim
    sl[axis] = index
    x[tuple(sl)] = values


class NumpyBackend(Backend):
    name = "numpy"
    is_reference = True
    cpu_only = True
    priority = -1
    collective_backend = "gloo"  # host memory: torch.distributed's gloo over zero-copy views

    kernels = {
        ops.full: _full,
        ops.arange: _arange,
        ops.cast: _cast,
        ops.neg: np.negative,
        ops.abs: np.abs,
        ops.exp: _via_f32_unary(np.exp),
        ops.log: _via_f32_unary(np.log),
        ops.sqrt: _via_f32_unary(np.sqrt),
        ops.rsqrt: _via_f32_unary(lambda x: 1.0 / np.sqrt(x)),
        ops.sin: _via_f32_unary(np.sin),
        ops.cos: _via_f32_unary(np.cos),
        ops.tanh: _via_f32_unary(np.tanh),
        ops.erf: _via_f32_unary(lambda x: np.asarray(_erf(x), dtype=x.dtype)),
        ops.add: _via_f32_binary(np.add),
        ops.sub: _via_f32_binary(np.subtract),
        ops.mul: _via_f32_binary(np.multiply),
        ops.div: _via_f32_binary(np.divide),
        ops.pow: _via_f32_binary(np.power),
        ops.maximum: _via_f32_binary(np.maximum),
        ops.minimum: _via_f32_binary(np.minimum),
        ops.eq: _compare(np.equal),
        ops.lt: _compare(np.less),
        ops.gt: _compare(np.greater),
        ops.logical_not: np.logical_not,
        ops.where: _where,
        ops.matmul: _matmul,
        ops.sum: _sum,
        ops.max: _max,
        ops.argmax: _argmax,
        ops.reshape: lambda x, *, shape: np.reshape(x, shape),
        ops.permute: lambda x, *, axes: np.transpose(x, axes),
        ops.broadcast_to: lambda x, *, shape: np.broadcast_to(x, shape),
        ops.concat: lambda xs, *, axis=0: np.concatenate(xs, axis=axis),
        ops.slice: slice_reference,
        ops.gather: _gather,
        ops.index_copy: _index_copy,
        ops.index_add: _index_add,
    }
    inplace_kernels = {ops.index_copy: _index_copy_inplace}

    @classmethod
    def probe(cls) -> Probe:
        return Probe(True, devices=("cpu",))

    def from_numpy(self, array):
        return np.asarray(array)

    def to_numpy(self, native):
        return np.asarray(native)

    def dtype_of(self, native):
        return _DTYPES.get(native.dtype) or from_numpy_dtype(native.dtype)

    def scalar(self, value, dtype):
        return dtype.numpy.type(value)

    def device_facts(self):
        import os

        return {"device_count": 1, "device_name": "host CPU (numpy)", "cpu_count": os.cpu_count(),
                "numpy": np.__version__, "collective_backend": self.collective_backend}


_DTYPES = {}


def _init_dtypes():
    from accel.core.dtypes import ALL_DTYPES

    for d in ALL_DTYPES:
        _DTYPES[d.numpy] = d


_init_dtypes()
