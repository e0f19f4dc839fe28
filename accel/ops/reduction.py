"""Reductions: sum, max and argmax are primitives; mean is sum / count."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import DTypeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import float_mask, keep_shape, reduced_count
from accel.core.op import COMPOSITE, PRIMITIVE, Op
from accel.ops._rules import normalize_axes, normalize_axis, spec


def _prepare_axis(args, attrs):
    x = args[0]
    axis, ndim = attrs["axis"], x.ndim
    if type(axis) is int and -ndim <= axis < ndim:  # one int axis: copy only to make it >= 0
        return args, (attrs if axis >= 0 else {**attrs, "axis": axis + ndim})
    attrs = dict(attrs)
    if axis is not None:
        axes = normalize_axes(axis, x.ndim)
        attrs["axis"] = axes[0] if isinstance(axis, int) else axes
    return args, attrs


def _reduced_shape(shape, axis, keepdims):
    axes = normalize_axes(axis, len(shape))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _sum_infer(x, *, axis=None, keepdims=False):
    if x.dtype is dt.bool_:
        raise DTypeError("sum of a bool tensor is ambiguous", hint="cast to int64 or float32 first")
    return spec(_reduced_shape(x.shape, axis, keepdims), x.dtype)


def _refuse_bool_max(x) -> None:
    if x.dtype is dt.bool_:
        raise DTypeError("max of a bool tensor is not declared (max takes float and int dtypes)",
                         hint="use accel.ops.logical_or to combine masks, or cast to int64 first")


def _prepare_max(args, attrs):
    _refuse_bool_max(args[0])  # refused in eager mode too, so every backend agrees
    return _prepare_axis(args, attrs)


def _max_infer(x, *, axis=None, keepdims=False):
    _refuse_bool_max(x)
    if 0 in [x.shape[a] for a in normalize_axes(axis, x.ndim)]:
        raise DTypeError(f"max over an empty axis of shape {list(x.shape)} has no value",
                         hint="reduce over a non-empty axis")
    return spec(_reduced_shape(x.shape, axis, keepdims), x.dtype)


def _mean_infer(x, *, axis=None, keepdims=False):
    if not x.dtype.is_floating:
        raise DTypeError(f"mean needs a floating input, got {x.dtype.name}",
                         hint="cast to float32 first")
    return spec(_reduced_shape(x.shape, axis, keepdims), x.dtype)


def _argmax_infer(x, *, axis=-1, keepdims=False):
    a = normalize_axis(axis, x.ndim)
    if x.ndim and x.shape[a] == 0:
        raise DTypeError("argmax over an empty axis has no answer", hint="reduce over a non-empty axis")
    return spec(_reduced_shape(x.shape, a, keepdims), dt.int64)


def _mean_decomposition(x, axis=None, keepdims=False):
    from accel.ops.elementwise import cast, mul

    axes = normalize_axes(axis, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    # Low precision: sum and scale in float32, round once. In float8 the sum overflows and
    # 1/count underflows to 0 (1/4096 < the smallest e4m3fn subnormal); found by conformance.
    xf = cast(x, dt.float32) if x.dtype in dt.LOW_PRECISION else x
    total = sum(xf, axis, keepdims)
    out = mul(total, 1.0 / count if count else float("nan"))
    return out if out.dtype is x.dtype else cast(out, x.dtype)


def _argmax_reference(x, *, axis=-1, keepdims=False):
    # NaN counts as the maximum (first NaN wins), as numpy, torch and jax agree.
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64)


sum = Op("sum", kind=PRIMITIVE, inputs=("x",), attrs={"axis": None, "keepdims": False},
         infer=_sum_infer, reference=lambda x, *, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims),
         prepare=_prepare_axis, dtypes=dt.FLOAT_DTYPES + dt.INT_DTYPES, accumulating=True,
         onnx="ReduceSum", cases={"family": "reduce"},
         doc="Sum over `axis` (None: all axes); floats accumulate in at least float32.")


@sum.defvjp
def _sum_vjp(g, out, x, *, axis=None, keepdims=False):
    return (_ops.broadcast_to(_ops.reshape(g, keep_shape(x.shape, axis)), x.shape),)


max = Op("max", kind=PRIMITIVE, inputs=("x",), attrs={"axis": None, "keepdims": False},
         infer=_max_infer, reference=lambda x, *, axis=None, keepdims=False: np.max(x, axis=axis, keepdims=keepdims),
         prepare=_prepare_max, dtypes=dt.FLOAT_DTYPES + dt.INT_DTYPES, exact=True,
         onnx="ReduceMax", cases={"family": "reduce", "nonempty": True},
         doc="Maximum over `axis` (None: all axes); NaN propagates.")


@max.defvjp
def _max_vjp(g, out, x, *, axis=None, keepdims=False):
    keep = keep_shape(x.shape, axis)
    hit = float_mask(_ops.eq(x, _ops.reshape(out, keep)), g)  # ties share the gradient evenly
    count = _ops.sum(hit, axis, True)
    return (_ops.mul(hit, _ops.div(_ops.reshape(g, keep), count)),)


mean = Op("mean", kind=COMPOSITE, inputs=("x",), attrs={"axis": None, "keepdims": False},
          infer=_mean_infer, reference=lambda x, *, axis=None, keepdims=False: np.mean(x, axis=axis, keepdims=keepdims),
          decompose=_mean_decomposition, prepare=_prepare_axis, dtypes=dt.FLOAT_DTYPES,
          accumulating=True, onnx="ReduceMean", cases={"family": "reduce", "nonempty": True},
          doc="Mean over `axis` (None: all axes).")


@mean.defvjp
def _mean_vjp(g, out, x, *, axis=None, keepdims=False):
    count = reduced_count(x.shape, axis)
    scaled = _ops.mul(_ops.reshape(g, keep_shape(x.shape, axis)), 1.0 / count if count else 0.0)
    return (_ops.broadcast_to(scaled, x.shape),)


argmax = Op("argmax", kind=PRIMITIVE, inputs=("x",), attrs={"axis": -1, "keepdims": False},
            infer=_argmax_infer, reference=_argmax_reference, dtypes=dt.FLOAT_DTYPES + dt.INT_DTYPES,
            exact=True, onnx="ArgMax", cases={"family": "argmax"},
            doc="Index (int64) of the first maximum along `axis`.")

