"""Shape/dtype rules and eager argument preparation shared by op declarations.

Rules raise ShapeError/DTypeError with what is wrong and what to do; the dispatcher adds the op,
backend and argument description in front.
"""
from __future__ import annotations

from accel.core import dtypes as dt
from accel.core.dtypes import DType, promote, result_type_with_scalar
from accel.core.errors import DTypeError, OpError, ShapeError
from accel.core.spec import TensorSpec
from accel.core.tensor import Tensor, is_scalar


def spec(shape, dtype: DType) -> TensorSpec:
    return TensorSpec(tuple(int(d) for d in shape), dtype)


def normalize_axis(axis: int, ndim: int, what: str = "axis") -> int:
    if not isinstance(axis, int) or not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ShapeError(f"{what} {axis!r} is out of range for a {ndim}-d input",
                         hint=f"use an {what} in [-{max(ndim, 1)}, {max(ndim, 1) - 1}]")
    return axis % ndim if ndim else 0


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (normalize_axis(axis, ndim),)
    if not isinstance(axis, (tuple, list)):  # 1.5, "0": not an axis, and not a sequence of them
        raise ShapeError(f"axis must be an int, a tuple of ints or None, got {axis!r}",
                         hint=f"use an axis in [-{max(ndim, 1)}, {max(ndim, 1) - 1}]")
    out = tuple(sorted(normalize_axis(a, ndim) for a in axis))
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis!r}", hint="name each axis once")
    return out


def broadcast_shapes(*shapes) -> tuple[int, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        size = 1
        for s in shapes:
            d = s[i - ndim + len(s)] if i - ndim + len(s) >= 0 else 1
            if d != 1:
                if size != 1 and d != size:
                    raise ShapeError(
                        f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast "
                        f"(dimension {i - ndim}: {size} vs {d})",
                        hint="reshape one input so each dimension matches or is 1")
                size = d
        out.append(size)
    return tuple(out)


def require_float(x, what: str = "input") -> None:
    if not x.dtype.is_floating:
        raise DTypeError(f"{what} must be floating point, got {x.dtype.name}",
                         hint="cast it first, e.g. accel.ops.cast(x, accel.float32)")


def require_same_dtype(*xs) -> DType:
    first = xs[0].dtype
    for x in xs[1:]:
        if x is not None and x.dtype is not first:
            raise DTypeError(
                f"dtypes differ: {', '.join(x.dtype.name for x in xs if x is not None)}",
                hint="cast the inputs to one dtype first (accel.ops.cast)")
    return first


# --- eager preparation ----------------------------------------------------------------------
def _as_tensor_like(value, like: Tensor, dtype: DType) -> Tensor:
    return Tensor(like.backend.scalar(value, dtype), like.backend)


def _cast(x: Tensor, dtype: DType) -> Tensor:
    from accel.ops.elementwise import cast

    return cast(x, dtype)


def prepare_binary(args: tuple, attrs: dict):
    """Python scalars become weak 0-d tensors; mismatched dtypes promote (written once here)."""
    a, b = args
    if type(a) is Tensor and type(b) is Tensor and a.data.dtype == b.data.dtype:
        return args, attrs  # the hot path: same native dtype, nothing to promote
    if type(a) is Tensor and (type(b) is float or type(b) is int):  # `x * 0.5`, skipping ABC checks
        da = a.dtype
        target = result_type_with_scalar(da, b)
        a = a if da is target else _cast(a, target)
        return (a, _as_tensor_like(b, a, target)), attrs
    ta, tb = type(a) is Tensor or isinstance(a, Tensor), type(b) is Tensor or isinstance(b, Tensor)
    if ta and tb:
        da, db = a.dtype, b.dtype
        if da is db:
            return args, attrs
        target = promote(da, db)
        return (a if da is target else _cast(a, target), b if db is target else _cast(b, target)), attrs
    if ta and is_scalar(b):
        target = result_type_with_scalar(a.dtype, b)
        a = a if a.dtype is target else _cast(a, target)
        return (a, _as_tensor_like(b, a, target)), attrs
    if tb and is_scalar(a):
        target = result_type_with_scalar(b.dtype, a)
        b = b if b.dtype is target else _cast(b, target)
        return (_as_tensor_like(a, b, target), b), attrs
    raise OpError(f"expected tensors or Python numbers, got {type(a).__name__} and {type(b).__name__}",
                  hint="wrap host data with accel.tensor(...)")


# Two tensors of one native dtype come back unchanged: the dispatcher tests that inline and
# skips the call (accel.core.op.Op reads this flag).
prepare_binary.same_dtype_is_noop = True


def prepare_float_binary(args: tuple, attrs: dict):
    """As prepare_binary, then int/bool results become float32 (true division, pow)."""
    (a, b), attrs = prepare_binary(args, attrs)
    if not a.dtype.is_floating:
        a, b = _cast(a, dt.float32), _cast(b, dt.float32)
    return (a, b), attrs


def prepare_float_unary(args: tuple, attrs: dict):
    x = args[0]
    if not isinstance(x, Tensor):
        raise OpError(f"expected an accel.Tensor, got {type(x).__name__}",
                      hint="wrap host data with accel.tensor(...)")
    if not x.dtype.is_floating:
        raise DTypeError(f"input must be floating point, got {x.dtype.name} {list(x.shape)}",
                         hint="cast it first, e.g. accel.ops.cast(x, accel.float32)")
    return args, attrs


def prepare_where(args: tuple, attrs: dict):
    cond, a, b = args
    (a, b), _ = prepare_binary((a, b), {})
    if isinstance(cond, Tensor) and cond.dtype is not dt.bool_:
        raise DTypeError(f"condition must be bool, got {cond.dtype.name}",
                         hint="build it with a comparison (accel.ops.gt, eq, ...)")
    return (cond, a, b), attrs


def prepare_creation(args: tuple, attrs: dict):
    attrs = dict(attrs)
    attrs["dtype"] = dt.as_dtype(attrs["dtype"])
    shape = attrs.get("shape")
    if shape is not None:
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(shape)
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise ShapeError(f"shape must be non-negative integers, got {shape!r}",
                             hint="pass a tuple such as (2, 3)")
        attrs["shape"] = shape
    return args, attrs


def elementwise_infer(*xs, **_) -> TensorSpec:
    dtype = require_same_dtype(*xs)
    return spec(broadcast_shapes(*(x.shape for x in xs)), dtype)


def float_elementwise_infer(*xs, **_) -> TensorSpec:
    for x in xs:
        require_float(x)
    return elementwise_infer(*xs)


def compare_infer(a, b, **_) -> TensorSpec:
    require_same_dtype(a, b)
    return spec(broadcast_shapes(a.shape, b.shape), dt.bool_)
