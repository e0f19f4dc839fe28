"""JAX kernels for every accel primitive, with the numpy reference backend's semantics.

Low-precision floats (float16, bfloat16, float8) compute in float32 and round once, as the
reference does; matmul runs at the precision set by `set_matmul_precision` ("highest" by default,
as docs/conformance.md pins). `KERNELS` is the body of a `jax.jit`ted graph; `EAGER_KERNELS` are the
same kernels, each wrapped in its own `jax.jit` for eager calls (see there why). Only gather
differs: eagerly the indices are checked on the host (jax itself would clamp silently), under jit
an out-of-range index cannot raise and yields the fill value instead (documented in
docs/compile.md).
"""
from __future__ import annotations

import functools
import inspect

import jax

jax.config.update("jax_enable_x64", True)  # float64/int64 exist only with x64 (accel has both)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.scipy.special import erf as _erf  # noqa: E402

from accel.core import dtypes as dt  # noqa: E402
from accel import ops  # noqa: E402
from accel.backends._shared_kernels import LowPrecision, basic_slice  # noqa: E402
from accel.core.bounds import check_host_indices  # noqa: E402
from accel.core.errors import OpError  # noqa: E402

_LOW = frozenset(np.dtype(d.numpy) for d in dt.LOW_PRECISION)
_F32 = jnp.float32
_FLOATS = frozenset(np.dtype(d.numpy) for d in dt.FLOAT_DTYPES)

PRECISIONS = {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH,
              "default": lax.Precision.DEFAULT}


class _Settings:
    precision = lax.Precision.HIGHEST


settings = _Settings()


def set_matmul_precision(name: str) -> None:
    """"highest" (float32 exact, the conformance setting), "high" or "default" (TF32/bf16 passes
    on GPUs/TPUs: faster, judged by the reduced-precision thresholds). Graphs compiled earlier
    keep the precision they were compiled with."""
    if name not in PRECISIONS:
        raise OpError(f"unknown jax matmul precision {name!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    settings.precision = PRECISIONS[name]


# float16/bfloat16/float8 compute in float32 and round once.
_VIA_F32 = LowPrecision(_LOW, widen=lambda a: a.astype(_F32), round_to=lambda y, dtype: y.astype(dtype))
_unary, _binary, _compare = _VIA_F32.unary, _VIA_F32.binary, _VIA_F32.compare


def _true_divide(x, y):
    """x / y correctly rounded, as numpy and torch divide. XLA's algebraic simplifier rewrites
    divisions into other roundings: x / broadcast(y) into x * broadcast(1 / y) (~40 % of float32
    quotients by a scalar or a per-row divisor come out one ulp off, enough to move a float8 code
    at a rounding tie: x / scale and amax / 448 in accel.ops.fp8), and in a compiled graph
    (a / b) / c into a / (b * c). The operands, the divisor broadcast to the result's shape, go
    through an optimization barrier, which no rewrite sees through; the price is that a compiled
    graph materializes the broadcast divisor and fuses nothing into the division. Both operands
    already have one dtype (the dispatcher's promotion)."""
    y = jnp.broadcast_to(y, jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y)))
    x, y = lax.optimization_barrier((x, y))
    return jnp.true_divide(x, y)


def _cast(x, *, dtype, saturate=False):
    target = np.dtype(dtype.numpy)
    if saturate and dtype in dt.FLOAT8_DTYPES and x.dtype in _FLOATS:
        top = 57344.0 if dtype is dt.float8_e5m2 else 448.0
        x = x.astype(_F32) if x.dtype in _LOW else x  # 57344 does not exist in e4m3fn
        x = jnp.where(jnp.isnan(x), x, jnp.clip(x, -top, top))
    if dtype.kind in "ib" and x.dtype in _FLOATS:
        x = jnp.trunc(x.astype(_F32) if x.dtype in _LOW else x)  # truncate first, as the reference
    if dtype.is_floating and x.dtype in _LOW and x.dtype != target:
        x = x.astype(_F32)  # low-precision -> low-precision converts exactly through float32
    return x.astype(target)


@functools.lru_cache(maxsize=None)
def _jax_device(device: str):
    """The jax device a backend spec names ("cpu", "gpu:1"): creation kernels place on it."""
    platform, _, index = device.partition(":")
    return jax.devices({"cuda": "gpu", "rocm": "gpu"}.get(platform, platform))[int(index or 0)]


def _full(*, shape, value, dtype, device):
    return jax.device_put(jnp.full(shape, value, dtype=np.dtype(dtype.numpy)), _jax_device(device))


def _arange(*, start, stop, step, dtype, device):
    # Built on the host exactly as the reference does, then moved: the values are static.
    host = np.arange(start, stop, step, dtype=np.float64 if dtype.is_floating else np.int64)
    return jax.device_put(host.astype(dtype.numpy), _jax_device(device))


def _matmul(a, b):
    return _matmul_at(a, b, precision=settings.precision)


def _matmul_at(a, b, *, precision):
    if a.dtype in _LOW:
        return jnp.matmul(a.astype(_F32), b.astype(_F32), precision=precision).astype(a.dtype)
    return jnp.matmul(a, b, precision=precision)


def _sum(x, *, axis=None, keepdims=False):
    if x.dtype in _LOW:
        return jnp.sum(x.astype(_F32), axis=axis, keepdims=keepdims).astype(x.dtype)
    return jnp.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


def _max(x, *, axis=None, keepdims=False):
    return jnp.max(x, axis=axis, keepdims=keepdims)


def _argmax(x, *, axis=-1, keepdims=False):
    if x.ndim == 0:
        return jnp.asarray(0, dtype=jnp.int64)
    src = x.astype(_F32) if x.dtype in _LOW else x
    return jnp.argmax(src, axis=axis, keepdims=keepdims).astype(jnp.int64)


# XLA clamps (gather) or drops (scatter) an out-of-range index and wraps a negative one; eager
# kernels check the values on the host first (accel.core.bounds), as every backend's index
# kernels must. Inside jax.jit values are abstract and no check is possible (docs/errors.md).
def _gather_checked(x, indices, *, axis=0):
    check_host_indices(np.asarray(indices), x.shape[axis], axis=axis)
    return _take_checked(x, indices, axis=axis)


def _gather_in_bounds(x, indices, *, axis=0):
    """Indices already checked on the host: mode='clip' changes none of them."""
    return jnp.take(x, indices, axis=axis, mode="clip" if x.shape[axis] else "fill")


def _gather_traced(x, indices, *, axis=0):
    return jnp.take(x, indices, axis=axis, mode="fill")


def _index_copy(x, index, values, *, axis=0):
    where = (slice(None),) * axis + (index,)
    return x.at[where].set(values)


def _index_add(x, index, values, *, axis=0):
    where = (slice(None),) * axis + (index,)
    if x.dtype in _LOW:  # float16/bfloat16 sum in float32, rounded once
        return x.astype(_F32).at[where].add(values.astype(_F32)).astype(x.dtype)
    return x.at[where].add(values)


def _index_add_checked(x, index, values, *, axis=0):
    check_host_indices(np.asarray(index), x.shape[axis], axis=axis)
    return _index_add_jitted(x, index, values, axis=axis)


def _index_copy_checked(x, index, values, *, axis=0):
    check_host_indices(np.asarray(index), x.shape[axis], axis=axis)
    return _index_copy_jitted(x, index, values, axis=axis)


def _pow(x, y):
    return jnp.power(x, y)


KERNELS = {
    ops.full: _full,
    ops.arange: _arange,
    ops.cast: _cast,
    ops.neg: jnp.negative,
    ops.abs: jnp.abs,
    ops.exp: _unary(jnp.exp),
    ops.log: _unary(jnp.log),
    ops.sqrt: _unary(jnp.sqrt),
    ops.rsqrt: _unary(lax.rsqrt),
    ops.sin: _unary(jnp.sin),
    ops.cos: _unary(jnp.cos),
    ops.tanh: _unary(jnp.tanh),
    ops.erf: _unary(_erf),
    ops.add: _binary(jnp.add),
    ops.sub: _binary(jnp.subtract),
    ops.mul: _binary(jnp.multiply),
    ops.div: _binary(_true_divide),
    ops.pow: _binary(_pow),
    ops.maximum: _binary(jnp.maximum),
    ops.minimum: _binary(jnp.minimum),
    ops.eq: _compare(jnp.equal),
    ops.lt: _compare(jnp.less),
    ops.gt: _compare(jnp.greater),
    ops.logical_not: jnp.logical_not,
    ops.where: jnp.where,
    ops.matmul: _matmul,
    ops.sum: _sum,
    ops.max: _max,
    ops.argmax: _argmax,
    ops.reshape: lambda x, *, shape: jnp.reshape(x, shape),
    ops.permute: lambda x, *, axes: jnp.transpose(x, axes),
    ops.broadcast_to: lambda x, *, shape: jnp.broadcast_to(x, shape),
    ops.concat: lambda xs, *, axis=0: jnp.concatenate(xs, axis=axis),
    ops.slice: basic_slice,
    ops.gather: _gather_checked,
    ops.index_copy: _index_copy,
    ops.index_add: _index_add,
}

# Inside jax.jit values are abstract: no host check is possible.
TRACED_OVERRIDES = {ops.gather: _gather_traced}


# --- eager: one jax.jit per kernel ----------------------------------------------------------
# A jitted function is dispatched by jax's C++ fast path (~5 us per call on a CPU); a jnp/lax call
# made outside jit goes through Python each time (jnp.reshape ~25 us, jnp.concatenate ~50 us),
# and a kernel made of several jax calls (widen/compute/round for float16 and below, cast's steps,
# gather's index wrap) pays that once per call inside it. Attributes are static arguments: jit
# compiles once per (input shapes and dtypes, attrs), as jnp's own jitted functions (jnp.exp,
# jnp.sum, ...) already do when called eagerly; the op's `prepare` makes every attr hashable.
def _static_names(op, kernel) -> tuple[str, ...]:
    try:
        params = inspect.signature(kernel).parameters
    except (TypeError, ValueError):  # a builtin without a signature takes no attrs
        return ()
    return tuple(name for name in op.attrs if name in params)


def _jit(op, kernel):
    return jax.jit(kernel, static_argnames=_static_names(op, kernel))


_matmul_jitted = jax.jit(_matmul_at, static_argnames="precision")
_take_checked = jax.jit(_gather_in_bounds, static_argnames="axis")
_index_copy_jitted = jax.jit(_index_copy, static_argnames="axis")
_index_add_jitted = jax.jit(_index_add, static_argnames="axis")


def _matmul_eager(a, b):
    # The precision is an argument, not read inside the trace: set_matmul_precision applies to
    # the next eager call rather than to whatever jit cached first.
    return _matmul_jitted(a, b, precision=settings.precision)


_EAGER_AS_IS = {
    ops.full: _full, ops.arange: _arange,  # creation: no array input; a NaN fill never hits a cache
    ops.gather: _gather_checked,           # the host check runs first, then _take_checked (jitted)
    ops.index_copy: _index_copy_checked,   # the same for index_copy
    ops.index_add: _index_add_checked,     # and index_add
    ops.matmul: _matmul_eager,
}
EAGER_KERNELS = {op: _EAGER_AS_IS.get(op) or _jit(op, kernel) for op, kernel in KERNELS.items()}
