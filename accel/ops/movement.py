"""Movement primitives (reshape, permute, broadcast_to, concat, slice) and the helpers built
on them (transpose, squeeze, unsqueeze, flatten, split, stack, tensor indexing)."""
from __future__ import annotations

import builtins
import functools
import math

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import OpError, ShapeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import needs, unbroadcast
from accel.core.op import PRIMITIVE, Op
from accel.ops._rules import normalize_axis, require_same_dtype, spec
from accel.core.spec import describe
from accel.core.tensor import Tensor

ANY = dt.ALL_DTYPES


# --- reshape --------------------------------------------------------------------------------
def resolve_shape(shape, size: int) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise ShapeError(f"invalid target shape {shape}", hint="use at most one -1 and no other negatives")
    known = 1
    for d in shape:
        if d != -1:
            known *= d
    if unknown:
        if known == 0 or size % known:
            raise ShapeError(f"cannot reshape {size} elements into {shape}",
                             hint="the product of the known dims must divide the element count")
        shape = tuple(size // known if d == -1 else d for d in shape)
    elif known != size:
        raise ShapeError(f"cannot reshape {size} elements into {shape} ({known} elements)",
                         hint="the element count must stay the same")
    return shape


@functools.lru_cache(maxsize=1024)
def _resolve_for(shape, in_shape) -> tuple[int, ...]:
    """resolve_shape, remembered per (target, input shape): model code reshapes to the same few
    shapes every step, and a hit is one hash instead of the checks and the -1 inference."""
    return resolve_shape(shape, math.prod(int(d) for d in in_shape))


def _prepare_reshape(args, attrs):
    x = args[0]
    try:
        return args, {"shape": _resolve_for(attrs["shape"], x.data.shape)}
    except TypeError:  # an unhashable target (a list): resolve it without the cache
        return args, {"shape": resolve_shape(attrs["shape"], x.size)}


def _reshape_infer(x, *, shape):
    return spec(resolve_shape(shape, int(np.prod(x.shape, dtype=np.int64))), x.dtype)


reshape = Op("reshape", kind=PRIMITIVE, inputs=("x",), attrs={"shape": ()}, infer=_reshape_infer,
             reference=lambda x, *, shape: np.reshape(x, shape), prepare=_prepare_reshape,
             dtypes=ANY, exact=True, onnx="Reshape", cases={"family": "reshape"},
             doc="Same elements in row-major order with a new shape (one dim may be -1).")


@reshape.defvjp
def _reshape_vjp(g, out, x, *, shape):
    return (_ops.reshape(g, x.shape),)


# --- permute --------------------------------------------------------------------------------
def _normalize_perm(axes, ndim):
    axes = tuple(normalize_axis(a, ndim) for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ShapeError(f"permutation {axes} is not a permutation of {ndim} axes",
                         hint=f"name every axis 0..{ndim - 1} exactly once")
    return axes


# (axes, ndim) -> (the axes tuple first seen, its checked permutation of exact ints)
_PERMS: dict[tuple, tuple[tuple, tuple[int, ...]]] = {}


def _prepare_permute(args, attrs):
    axes, ndim = attrs["axes"], args[0].ndim
    try:
        seen, known = _PERMS.get((axes, ndim), (None, None))
    except TypeError:  # a list
        seen = known = None
    # 1.0 == 1 as a dict key, so a hit counts only for the very tuple checked before (a
    # constant in the caller's code) or one of exact ints; else the full check decides.
    if known is None or (seen is not axes and not all(type(a) is int for a in axes)):
        known = _normalize_perm(axes, ndim)
        if type(axes) is tuple and len(_PERMS) < 1024:
            _PERMS[axes, ndim] = (axes, known)
    return args, {"axes": known}


def _permute_infer(x, *, axes):
    axes = _normalize_perm(axes, x.ndim)
    return spec(tuple(x.shape[a] for a in axes), x.dtype)


permute = Op("permute", kind=PRIMITIVE, inputs=("x",), attrs={"axes": ()}, infer=_permute_infer,
             reference=lambda x, *, axes: np.transpose(x, axes), prepare=_prepare_permute,
             dtypes=ANY, exact=True, onnx="Transpose", cases={"family": "permute"},
             doc="Reorder axes: output axis i is input axis axes[i].")


@permute.defvjp
def _permute_vjp(g, out, x, *, axes):
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return (_ops.permute(g, tuple(inverse)),)


# --- broadcast_to ---------------------------------------------------------------------------
def _broadcast_infer(x, *, shape):
    shape = tuple(shape)
    if len(shape) < x.ndim or any(
            d != s and d != 1 for d, s in zip(x.shape, shape[len(shape) - x.ndim:])):
        raise ShapeError(f"cannot broadcast {list(x.shape)} to {list(shape)}",
                         hint="each input dim must equal the target dim or be 1")
    return spec(shape, x.dtype)


broadcast_to = Op("broadcast_to", kind=PRIMITIVE, inputs=("x",), attrs={"shape": ()},
                  infer=_broadcast_infer, reference=lambda x, *, shape: np.broadcast_to(x, shape),
                  prepare=lambda a, k: (a, {"shape": tuple(int(d) for d in k["shape"])}),
                  dtypes=ANY, exact=True, onnx="Expand", cases={"family": "broadcast"},
                  doc="Repeat size-1 (or missing leading) dims to reach `shape`.")


@broadcast_to.defvjp
def _broadcast_to_vjp(g, out, x, *, shape):
    return (unbroadcast(g, x.shape),)


# --- concat ---------------------------------------------------------------------------------
def _concat_infer(xs, *, axis=0):
    if not xs:
        raise ShapeError("concat needs at least one tensor", hint="pass a non-empty list")
    require_same_dtype(*xs)
    first = xs[0]
    a = normalize_axis(axis, first.ndim)
    for x in xs[1:]:
        if x.ndim != first.ndim or any(
                d != e for i, (d, e) in enumerate(zip(x.shape, first.shape)) if i != a):
            raise ShapeError(
                f"shapes {[list(x.shape) for x in xs]} differ outside axis {axis}",
                hint="all inputs must match except along the concatenation axis")
    shape = list(first.shape)
    shape[a] = builtins.sum(x.shape[a] for x in xs)
    return spec(shape, first.dtype)


def _prepare_concat(args, attrs):
    xs = list(args[0])
    if not xs:
        raise ShapeError("concat needs at least one tensor", hint="pass a non-empty list")
    return (xs,), {"axis": normalize_axis(attrs["axis"], xs[0].ndim)}


concat = Op("concat", kind=PRIMITIVE, inputs=("xs",), attrs={"axis": 0}, infer=_concat_infer,
            reference=lambda xs, *, axis=0: np.concatenate(xs, axis=axis), prepare=_prepare_concat,
            variadic=True, dtypes=ANY, exact=True, onnx="Concat", cases={"family": "concat"},
            doc="Join a list of tensors along an existing axis.")


@concat.defvjp
def _concat_vjp(g, out, xs, *, axis=0):
    grads, start = [], 0
    for x in xs:
        size = x.shape[axis]
        grads.append(_ops.slice(g, (axis,), (start,), (start + size,)) if needs(x) else None)
        start += size
    return (grads,)


# --- slice ----------------------------------------------------------------------------------
def _slice_ranges(shape, axes, starts, stops, steps):
    ndim = len(shape)
    steps = steps if steps is not None else (1,) * len(axes)
    if not (len(axes) == len(starts) == len(stops) == len(steps)):
        raise ShapeError("axes, starts, stops and steps must have the same length",
                         hint="give one start/stop/step per sliced axis")
    full = [(0, d, 1) for d in shape]
    for a, s, e, st in zip(axes, starts, stops, steps):
        if st is None or st < 1:
            raise ShapeError(f"slice step must be a positive integer, got {st!r}",
                             hint="reverse with permute/gather instead of a negative step")
        a = normalize_axis(a, ndim)
        full[a] = builtins.slice(s, e, st).indices(shape[a])
    return full


def _prepare_slice(args, attrs):
    x = args[0]
    ranges = _slice_ranges(x.shape, attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"])
    axes = tuple(range(x.ndim))
    return args, {"axes": axes, "starts": tuple(r[0] for r in ranges),
                  "stops": tuple(r[1] for r in ranges), "steps": tuple(r[2] for r in ranges)}


def _slice_infer(x, *, axes, starts, stops, steps=None):
    ranges = _slice_ranges(x.shape, axes, starts, stops, steps)
    return spec(tuple(len(range(*r)) for r in ranges), x.dtype)


def slice_reference(x, *, axes, starts, stops, steps=None):
    if type(steps) is tuple and axes == tuple(range(x.ndim)) \
            and len(starts) == len(stops) == len(steps) == x.ndim and _positive_ints(steps):
        # The prepared form (one range per axis, as eager calls send): for positive steps
        # Python slicing clamps exactly as slice.indices does, so no per-axis rework.
        return x[tuple(map(builtins.slice, starts, stops, steps))]
    ranges = _slice_ranges(x.shape, axes, starts, stops, steps)
    return x[tuple(builtins.slice(*r) for r in ranges)]


def _positive_ints(values: tuple) -> bool:
    return all(type(v) is int and v >= 1 for v in values)


slice = Op("slice", kind=PRIMITIVE, inputs=("x",),
           attrs={"axes": (), "starts": (), "stops": (), "steps": None},
           infer=_slice_infer, reference=slice_reference, prepare=_prepare_slice, dtypes=ANY,
           exact=True, onnx="Slice", cases={"family": "slice"},
           doc="""x[start:stop:step] along each of `axes` (Python slicing rules, positive steps).

           After preparation kernels always receive one (start, stop, step) per axis of x, with
           starts/stops already clamped into range, so `x[tuple(slice(*r) ...)]` is the kernel.""")


@slice.defvjp
def _slice_vjp(g, out, x, *, axes, starts, stops, steps=None):
    """Scatter g back into zeros, one sliced axis at a time (index_copy is a primitive)."""
    steps = steps if steps is not None else (1,) * len(axes)
    for a, start, stop, step in zip(axes, starts, stops, steps):
        a = a % x.ndim
        if (start, stop, step) == (0, x.shape[a], 1):
            continue
        shape = list(g.shape)
        shape[a] = x.shape[a]
        index = _ops.arange(start, stop, step, backend=g.backend)
        g = _ops.index_copy(_ops.zeros(tuple(shape), g.dtype, g.backend), index, g, a)
    return (g,)


# --- helpers built on the primitives (not ops of their own) ---------------------------------
def transpose(x: Tensor, a: int = -2, b: int = -1) -> Tensor:
    perm = list(range(x.ndim))
    a, b = normalize_axis(a, x.ndim), normalize_axis(b, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, tuple(perm))


def unsqueeze(x: Tensor, axis: int) -> Tensor:
    axis = normalize_axis(axis, x.ndim + 1)
    shape = list(x.shape)
    shape.insert(axis, 1)
    return reshape(x, tuple(shape))


def squeeze(x: Tensor, axis: int | None = None) -> Tensor:
    if axis is None:
        return reshape(x, tuple(d for d in x.shape if d != 1))
    axis = normalize_axis(axis, x.ndim)
    if x.shape[axis] != 1:
        raise ShapeError(f"cannot squeeze axis {axis} of size {x.shape[axis]}", hint="squeeze a size-1 axis")
    return reshape(x, x.shape[:axis] + x.shape[axis + 1:])


def flatten(x: Tensor, start: int = 0, end: int = -1) -> Tensor:
    start, end = normalize_axis(start, x.ndim), normalize_axis(end, x.ndim)
    shape = x.shape
    return reshape(x, shape[:start] + (-1,) + shape[end + 1:])


def split(x: Tensor, sizes, axis: int = -1) -> list[Tensor]:
    axis = normalize_axis(axis, x.ndim)
    if isinstance(sizes, int):
        if x.shape[axis] % sizes:
            raise ShapeError(f"cannot split {x.shape[axis]} into {sizes} equal parts",
                             hint="give explicit sizes")
        sizes = [x.shape[axis] // sizes] * sizes
    out, start = [], 0
    for size in sizes:
        out.append(slice(x, (axis,), (start,), (start + size,)))
        start += size
    if start != x.shape[axis]:
        raise ShapeError(f"split sizes {list(sizes)} do not add up to {x.shape[axis]}",
                         hint="make the sizes sum to the axis length")
    return out


def stack(xs, axis: int = 0) -> Tensor:
    xs = list(xs)
    if not xs:
        raise ShapeError("stack needs at least one tensor", hint="pass a non-empty list")
    return concat([unsqueeze(x, axis) for x in xs], axis)


def getitem(x: Tensor, key) -> Tensor:
    """Basic indexing: ints, slices, None and Ellipsis (tensor indices: use accel.ops.gather).

    The index is parsed here into slice's prepared form (one clamped range per axis), so the
    op calls skip their own preparation (Op.call_prepared).
    """
    shape = x.shape
    if type(key) is builtins.slice and shape:  # x[a:b], the common case, without the loop
        try:
            start, stop, step = key.indices(shape[0])
        except (TypeError, ValueError):  # float bounds, step 0: _basic_index explains
            step = 0
        if step >= 1:
            if start == 0 and stop == shape[0] and step == 1:
                return x
            rest = len(shape) - 1
            return slice.call_prepared((x,), {
                "axes": tuple(range(rest + 1)), "starts": (start,) + (0,) * rest,
                "stops": (stop,) + shape[1:], "steps": (step,) + (1,) * rest})
    try:
        starts, stops, steps, out_shape = _basic_index(shape, key)
    except OpError as error:
        message = error.args[0].split("\n")[0]
        raise type(error)(f"getitem({describe(x)}, {key!r}) on {x.backend.spec}: {message}",
                          hint=error.hint) from None
    out = x
    if any((s, e, st) != (0, d, 1) for s, e, st, d in zip(starts, stops, steps, shape)):
        out = slice.call_prepared((x,), {"axes": tuple(range(len(shape))), "starts": starts,
                                         "stops": stops, "steps": steps})
    if out_shape != out.shape:
        out = reshape.call_prepared((out,), {"shape": out_shape})
    return out


def _basic_index(shape: tuple, key) -> tuple[tuple, tuple, tuple, tuple]:
    """(starts, stops, steps) with one clamped range per axis of `shape`, and the result shape."""
    if not isinstance(key, tuple):
        key = (key,)
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise OpError("an index can only have one Ellipsis", hint="use at most one ...")
    consumed = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    ndim = len(shape)
    if consumed > ndim:
        raise OpError(f"too many indices ({consumed}) for a {ndim}-d tensor", hint="index fewer axes")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (builtins.slice(None),) * (ndim - consumed) + key[i + 1:]
    else:
        key = key + (builtins.slice(None),) * (ndim - consumed)
    starts, stops, steps, out_shape = [], [], [], []
    dim = 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = shape[dim]
        if isinstance(k, (int, np.integer)):
            k = int(k)
            if not -n <= k < n:
                raise OpError(f"index {k} is out of range for axis {dim} of size {n}",
                              hint=f"use an index in [-{n}, {n - 1}]")
            k = k % n
            starts.append(k), stops.append(k + 1), steps.append(1)
        elif isinstance(k, builtins.slice):
            try:
                start, stop, step = k.indices(n)
            except (TypeError, ValueError) as exc:  # float bounds, step 0
                raise OpError(f"bad slice {k!r} for axis {dim}: {exc}",
                              hint="use integer start/stop and a positive integer step") from None
            if step < 1:
                raise OpError("negative slice steps are not supported", hint="use a positive step")
            starts.append(start), stops.append(stop), steps.append(step)
            out_shape.append(len(range(start, stop, step)))
        else:
            raise OpError(f"unsupported index {k!r} of type {type(k).__name__}",
                          hint="use ints, slices, None or ...; for tensor indices use accel.ops.gather")
        dim += 1
    return tuple(starts), tuple(stops), tuple(steps), tuple(out_shape)
