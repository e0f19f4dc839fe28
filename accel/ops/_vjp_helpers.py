"""Small helpers shared by the VJPs declared beside each op (`@op.defvjp` in `accel/ops/*.py`).

A VJP is `rule(g, out, *inputs, **attrs) -> tuple` with one gradient per input (a list for a
variadic input, None where there is none). Rules are written in accel ops so they run on every
backend and trace under compile. Gradients have the input's shape (broadcast dims sum-reduced,
`unbroadcast`) and dtype. A rule skips inputs whose `requires_grad` is off (constants such as
the scalar in `x * 2.0` or rope's cos/sin tables): the tape sets it on everything it tracks.
Low-precision inputs are differentiated in float32 and rounded once (`up`, then `like`), as the
forward decompositions do.
"""
from __future__ import annotations

from accel import ops as _ops  # the package is still importing when the op modules load us
from accel.core import dtypes as dt
from accel.core.tensor import Tensor


def needs(x) -> bool:
    """Whether the tape wants a gradient for `x`."""
    return isinstance(x, Tensor) and x.requires_grad


def unbroadcast(g: Tensor, shape) -> Tensor:
    """Sum g over the dims that broadcasting added or stretched, to get back to `shape`."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if axes:
        g = _ops.sum(g, axes, True)
    return _ops.reshape(g, shape)


def up(x: Tensor) -> Tensor:
    """float32 for a low-precision tensor, else x itself."""
    return _ops.cast(x, dt.float32) if x.dtype in dt.LOW_PRECISION else x


def like(g: Tensor, other: Tensor) -> Tensor:
    """g in the dtype of `other` (the input whose gradient it is)."""
    return g if g.dtype is other.dtype else _ops.cast(g, other.dtype)


def float_mask(cond: Tensor, like_: Tensor) -> Tensor:
    """A bool tensor as 0/1 in the dtype of `like_`."""
    return _ops.cast(cond, like_.dtype)


def keep_shape(shape, axis) -> tuple[int, ...]:
    """The reduced shape with keepdims=True for a reduction over `axis` (None: all)."""
    if axis is None:
        return (1,) * len(shape)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = {a % len(shape) for a in axes} if shape else set()
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def reduced_count(shape, axis) -> int:
    """How many elements a reduction over `axis` (None: all) folds into one."""
    if axis is None:
        axes = range(len(shape))
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def scatter_add_rows(g2: Tensor, index: Tensor, n: int) -> Tensor:
    """sum over i of onehot(index[i]) ⊗ g2[..., i, :]: (P, M, Q) and (M,) -> (P, n, Q).

    Gather's gradient adds rows that share an index: one `index_add` (a scatter-add, M x Q
    work), not a one-hot matmul (M x n memory and M x n x Q FLOPs: 4 GiB for 8k tokens over a
    128k vocabulary in float32). accel bench's training section measures both.
    """
    p, _, q = g2.shape
    zeros = _ops.zeros((p, n, q), g2.dtype, g2.backend)
    return _ops.index_add(zeros, _ops.reshape(index, (-1,)), g2, 1)
