"""Index ops: gather (np.take along one axis) and index_copy (functional scatter along one
axis), plus the in-place form used by the static KV cache."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.bounds import check_host_indices
from accel.core.errors import AccelError, DTypeError, OpError, ShapeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import like, needs, scatter_add_rows, up
from accel.core.op import PRIMITIVE, Op
from accel.ops._rules import normalize_axis, spec
from accel.core.tensor import Tensor

INDEX_DTYPES = (dt.int32, dt.int64)


def _check_index(index, what="indices"):
    if index.dtype not in INDEX_DTYPES:
        raise DTypeError(f"{what} must be int32 or int64, got {index.dtype.name}",
                         hint="cast the indices to int64 (accel.ops.cast)")


def _prepare_axis(args, attrs):
    if args[1].dtype not in INDEX_DTYPES:  # a float index would be truncated by some kernels
        _check_index(args[1])
    axis, ndim = attrs["axis"], args[0].ndim
    if type(axis) is int and -ndim <= axis < ndim:  # copy only to make the axis >= 0
        return args, (attrs if axis >= 0 else {"axis": axis + ndim})
    return args, {"axis": normalize_axis(axis, ndim)}


def _gather_infer(x, indices, *, axis=0):
    _check_index(indices)
    a = normalize_axis(axis, x.ndim)
    return spec(tuple(x.shape[:a]) + tuple(indices.shape) + tuple(x.shape[a + 1:]), x.dtype)


def gather_reference(x, indices, *, axis=0):
    check_host_indices(np.asarray(indices), np.shape(x)[axis], axis=axis)
    return np.take(x, indices, axis=axis)


gather = Op("gather", kind=PRIMITIVE, inputs=("x", "indices"), attrs={"axis": 0},
            infer=_gather_infer, reference=gather_reference, prepare=_prepare_axis,
            dtypes=dt.ALL_DTYPES, exact=True, onnx="Gather", cases={"family": "gather"},
            doc="""Take entries of x along `axis` at integer `indices` (any shape): the output
            shape is x.shape[:axis] + indices.shape + x.shape[axis+1:]. Indices must lie in
            [0, x.shape[axis]): a negative or too large one raises IndexOutOfRangeError on every
            backend in eager mode (the kernel checks it; compiled graphs do not).""")


@gather.defvjp
def _gather_vjp(g, out, x, indices, *, axis=0):
    axis = axis % x.ndim
    pre = 1
    for d in x.shape[:axis]:
        pre *= d
    post = 1
    for d in x.shape[axis + 1:]:
        post *= d
    g2 = _ops.reshape(g, (pre, indices.size, post))
    gx = scatter_add_rows(up(g2), indices, x.shape[axis])
    return (like(_ops.reshape(gx, x.shape), x), None)


def _index_copy_infer(x, index, values, *, axis=0):
    _check_index(index, "index")
    if values.dtype is not x.dtype:
        raise DTypeError(f"values dtype {values.dtype.name} differs from the target's {x.dtype.name}",
                         hint="cast the values to the target's dtype first")
    a = normalize_axis(axis, x.ndim)
    if index.ndim != 1:
        raise ShapeError(f"index must be 1-d, got shape {list(index.shape)}", hint="flatten the index")
    want = tuple(x.shape[:a]) + (index.shape[0],) + tuple(x.shape[a + 1:])
    if tuple(values.shape) != want:
        raise ShapeError(f"values shape {list(values.shape)} does not fit: expected {list(want)}",
                         hint="values must match x except along `axis`, where it has len(index) entries")
    return spec(x.shape, x.dtype)


def index_copy_reference(x, index, values, *, axis=0):
    check_host_indices(np.asarray(index), np.shape(x)[axis], axis=axis)
    out = np.array(x, copy=True)
    sl = [slice(None)] * out.ndim
    sl[axis] = index
    out[tuple(sl)] = values
    return out


def _prepare_index_copy(args, attrs):
    x, index, values = args
    if values.dtype is not x.dtype or index.ndim != 1 or index.dtype not in INDEX_DTYPES:
        _index_copy_infer(x, index, values, axis=attrs["axis"])  # raises the precise error
    return args, {"axis": normalize_axis(attrs["axis"], x.ndim)}


index_copy = Op("index_copy", kind=PRIMITIVE, inputs=("x", "index", "values"), attrs={"axis": 0},
                infer=_index_copy_infer, reference=index_copy_reference, prepare=_prepare_index_copy,
                dtypes=dt.ALL_DTYPES, exact=True, onnx="ScatterElements",
                cases={"family": "index_copy"},
                doc="""A copy of x with x[..., index[i], ...] = values[..., i, ...] along `axis`.
                `index` is 1-d with distinct entries (duplicates: unspecified winner) in
                [0, x.shape[axis]); one outside raises IndexOutOfRangeError before anything is
                written (eager mode, every backend).""")


@index_copy.defvjp
def _index_copy_vjp(g, out, x, index, values, *, axis=0):
    gx = gv = None
    if needs(x):  # overwritten entries get no gradient
        gx = _ops.index_copy(g, index, _ops.zeros(values.shape, g.dtype, g.backend), axis)
    if needs(values):
        gv = _ops.gather(g, index, axis)
    return gx, None, gv


def _index_add_infer(x, index, values, *, axis=0):
    if x.dtype not in INDEX_ADD_DTYPES:
        raise DTypeError(f"index_add adds: {x.dtype.name} is not a dtype it sums in",
                         hint=f"use one of {', '.join(d.name for d in INDEX_ADD_DTYPES)}")
    return _index_copy_infer(x, index, values, axis=axis)  # the same shape and dtype rules


def index_add_reference(x, index, values, *, axis=0):
    """float64 sums (ints exactly in int64), rounded once to x's dtype: duplicates accumulate."""
    index = np.asarray(index)
    check_host_indices(index, np.shape(x)[axis], axis=axis)
    wide = np.float64 if np.asarray(x).dtype.kind == "f" or x.dtype in _LOW_NUMPY else np.int64
    out = np.array(x, dtype=wide, copy=True)
    sl = [slice(None)] * out.ndim
    sl[axis] = index
    np.add.at(out, tuple(sl), np.asarray(values, dtype=wide))
    return out.astype(np.asarray(x).dtype)


INDEX_ADD_DTYPES = (dt.float64, dt.float32, dt.float16, dt.bfloat16, dt.int32, dt.int64)
_LOW_NUMPY = (dt.bfloat16.numpy,)

index_add = Op("index_add", kind=PRIMITIVE, inputs=("x", "index", "values"), attrs={"axis": 0},
               infer=_index_add_infer, reference=index_add_reference, prepare=_prepare_index_copy,
               dtypes=INDEX_ADD_DTYPES, onnx="ScatterElements", cases={"family": "index_add"},
               accumulating=True,
               doc="""A copy of x with values[..., i, ...] added to x[..., index[i], ...] along
               `axis`; repeated indices accumulate (a scatter-add: torch's index_add, jax's
               .at[].add, ONNX ScatterElements with reduction="add"). `index` is 1-d in
               [0, x.shape[axis]) (checked in eager mode). Sums as if in float64 and rounded
               once; float16/bfloat16 accumulate in float32. The gradient of gather and
               embedding: tokens x dim work and memory instead of a tokens x vocabulary one-hot.""")


@index_add.defvjp
def _index_add_vjp(g, out, x, index, values, *, axis=0):
    gv = _ops.gather(g, index, axis) if needs(values) else None
    return (g if needs(x) else None), None, gv


def index_copy_inplace(x: Tensor, index: Tensor, values: Tensor, axis: int = 0) -> Tensor:
    """In-place index_copy on `x` (returns x). See Tensor.index_copy_.

    A backend's in-place kernel writes into x's array; without one (or while tracing or
    recording gradients) the functional op runs and x takes the new array.
    """
    from accel.core import dispatch

    if x.requires_grad or getattr(values, "requires_grad", False):  # set by accel.autodiff.autograd
        raise OpError(f"index_copy_ on {x.backend.spec}: in-place update of a tensor that gradients "
                      f"are being recorded for (x {list(x.shape)}, values {list(values.shape)})",
                      hint="in-place ops are not differentiable; use the functional "
                           "accel.ops.index_copy (or call the model without a KV cache) when training")
    kernel = x.backend.inplace_kernels.get(index_copy)
    if kernel is not None and isinstance(values, Tensor) and isinstance(index, Tensor):
        _prepare_index_copy((x, index, values), {"axis": axis})
    if kernel is not None and dispatch.mode.hook is None and isinstance(values, Tensor) \
            and isinstance(index, Tensor) and values.backend is x.backend and index.backend is x.backend:
        axis = normalize_axis(axis, x.ndim)
        try:
            kernel(x.data, index.data, values.data, axis=axis)
        except AccelError as error:  # keeps its class (a DeviceError stays one), call in front
            raise dispatch._contextual(index_copy, (x, index, values), {"axis": axis}, error)
        except Exception as exc:
            raise dispatch.explain(index_copy, x.backend, (x, index, values), {"axis": axis}, exc) from exc
        return x
    out = index_copy(x, index, values, axis)
    x.data = out.data
    return x
