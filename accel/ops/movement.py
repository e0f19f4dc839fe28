"""Movement primitives (reshape, permute, broadcast_to, concat, slice) and the helpers built
on them (transpose, squeeze, unsqueeze, flatten, split, stack, tensor indexing)."""
from __future__ import annotations

import builtins

import numpy as np

from accel import dtypes as dt
from accel.errors import OpError, ShapeError
from accel import grad_rules
from accel.op import PRIMITIVE, Op
from accel.ops._rules import normalize_axis, require_same_dtype, spec
from accel.tensor import Tensor

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


def _prepare_reshape(args, attrs):
    x = args[0]
    return args, {"shape": resolve_shape(attrs["shape"], x.size)}


def _reshape_infer(x, *, shape):
    return spec(resolve_shape(shape, int(np.prod(x.shape, dtype=np.int64))), x.dtype)


reshape = Op("reshape", kind=PRIMITIVE, inputs=("x",), attrs={"shape": ()}, infer=_reshape_infer,
             reference=lambda x, *, shape: np.reshape(x, shape), prepare=_prepare_reshape, vjp=grad_rules.reshape,
             dtypes=ANY, exact=True, onnx="Reshape", cases={"family": "reshape"},
             doc="Same elements in row-major order with a new shape (one dim may be -1).")


# --- permute --------------------------------------------------------------------------------
def _normalize_perm(axes, ndim):
    axes = tuple(normalize_axis(a, ndim) for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ShapeError(f"permutation {axes} is not a permutation of {ndim} axes",
                         hint=f"name every axis 0..{ndim - 1} exactly once")
    return axes


def _prepare_permute(args, attrs):
    return args, {"axes": _normalize_perm(attrs["axes"], args[0].ndim)}


def _permute_infer(x, *, axes):
    axes = _normalize_perm(axes, x.ndim)
    return spec(tuple(x.shape[a] for a in axes), x.dtype)


permute = Op("permute", kind=PRIMITIVE, inputs=("x",), attrs={"axes": ()}, infer=_permute_infer,
             reference=lambda x, *, axes: np.transpose(x, axes), prepare=_prepare_permute, vjp=grad_rules.permute,
             dtypes=ANY, exact=True, onnx="Transpose", cases={"family": "permute"},
             doc="Reorder axes: output axis i is input axis axes[i].")


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
                  prepare=lambda a, k: (a, {"shape": tuple(int(d) for d in k["shape"])}), vjp=grad_rules.broadcast_to,
                  dtypes=ANY, exact=True, onnx="Expand", cases={"family": "broadcast"},
                  doc="Repeat size-1 (or missing leading) dims to reach `shape`.")


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
            reference=lambda xs, *, axis=0: np.concatenate(xs, axis=axis), prepare=_prepare_concat, vjp=grad_rules.concat,
            variadic=True, dtypes=ANY, exact=True, onnx="Concat", cases={"family": "concat"},
            doc="Join a list of tensors along an existing axis.")


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
    ranges = _slice_ranges(x.shape, axes, starts, stops, steps)
    return x[tuple(builtins.slice(*r) for r in ranges)]


slice = Op("slice", kind=PRIMITIVE, inputs=("x",),
           attrs={"axes": (), "starts": (), "stops": (), "steps": None},
           infer=_slice_infer, reference=slice_reference, prepare=_prepare_slice, dtypes=ANY, vjp=grad_rules.slice,
           exact=True, onnx="Slice", cases={"family": "slice"},
           doc="""x[start:stop:step] along each of `axes` (Python slicing rules, positive steps).

           After preparation kernels always receive one (start, stop, step) per axis of x, with
           starts/stops already clamped into range, so `x[tuple(slice(*r) ...)]` is the kernel.""")


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
    """Basic indexing: ints, slices, None and Ellipsis (tensor indices: use accel.ops.gather)."""
    if not isinstance(key, tuple):
        key = (key,)
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise OpError("an index can only have one Ellipsis", hint="use at most one ...")
    consumed = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if consumed > x.ndim:
        raise OpError(f"too many indices ({consumed}) for a {x.ndim}-d tensor", hint="index fewer axes")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (builtins.slice(None),) * (x.ndim - consumed) + key[i + 1:]
    key = key + (builtins.slice(None),) * (x.ndim - consumed)
    axes, starts, stops, steps, out_shape = [], [], [], [], []
    dim = 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = x.shape[dim]
        if isinstance(k, (int, np.integer)):
            k = int(k)
            if not -n <= k < n:
                raise OpError(f"index {k} is out of range for axis {dim} of size {n}",
                              hint=f"use an index in [-{n}, {n - 1}]")
            k = k % n
            axes.append(dim), starts.append(k), stops.append(k + 1), steps.append(1)
        elif isinstance(k, builtins.slice):
            start, stop, step = k.indices(n)
            if step < 1:
                raise OpError("negative slice steps are not supported", hint="use a positive step")
            axes.append(dim), starts.append(start), stops.append(stop), steps.append(step)
            out_shape.append(len(range(start, stop, step)))
        else:
            raise OpError(f"unsupported index {k!r} of type {type(k).__name__}",
                          hint="use ints, slices, None or ...; for tensor indices use accel.ops.gather")
        dim += 1
    out = x
    if any((s, e, st) != (0, x.shape[a], 1) for a, s, e, st in zip(axes, starts, stops, steps)):
        out = slice(x, tuple(axes), tuple(starts), tuple(stops), tuple(steps))
    if tuple(out_shape) != out.shape:
        out = reshape(out, tuple(out_shape))
    return out
