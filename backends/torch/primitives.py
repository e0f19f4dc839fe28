"""torch kernels for accel's primitives (and the composites torch has a single call for), with
the numpy reference backend's semantics: float -> int casts truncate, argmax takes the first
maximum and NaN as the maximum, gather wraps negative indices and raises for out-of-range ones,
reductions over axis=() are the identity.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from accel import ops
from accel.core.bounds import check_bounds
from accel.backends._shared_kernels import basic_slice
from accel.backends.torch.dtypes import F8, F8_VIA_F32, F32, TORCH_DTYPES, cast, exact_value, rounded

# --- elementwise ------------------------------------------------------------------------------
_f8_unary, _f8_binary, _f8_compare = F8_VIA_F32.unary, F8_VIA_F32.binary, F8_VIA_F32.compare
_HALF = frozenset((torch.float16, torch.bfloat16))
_ARGMAX_UPCAST_MIN = 2048  # below this the copy costs more than it saves


def _math_unary(fn):
    """A transcendental function: torch's vectorised (contiguous) and scalar (strided) loops
    round differently in the last bit, and the conformance suite requires a permuted or sliced
    input to give exactly the contiguous result, so strided inputs are made dense first."""
    inner = _f8_unary(fn)

    def kernel(x):
        return inner(x if x.is_contiguous() else x.contiguous())
    kernel.__name__ = inner.__name__
    return kernel


def _math_binary(fn):
    inner = _f8_binary(fn)

    def kernel(x, y):
        return inner(x if x.is_contiguous() else x.contiguous(), y if y.is_contiguous() else y.contiguous())
    kernel.__name__ = inner.__name__
    return kernel


# --- creation (device-bound, see creation_kernels) -------------------------------------------
def _full(*, shape, value, dtype, device):
    return torch.full(shape, exact_value(value, dtype), dtype=TORCH_DTYPES[dtype], device=device)


def _arange(*, start, stop, step, dtype, device):
    # Built on the host exactly as the reference does (float64 then rounded), then moved.
    host = np.arange(start, stop, step, dtype=np.float64 if dtype.is_floating else np.int64)
    return cast(torch.from_numpy(host).to(device), dtype=dtype)  # numpy's rounding, any dtype


def creation_kernels(device: torch.device) -> dict:
    return {ops.full: functools.partial(_full, device=device),
            ops.arange: functools.partial(_arange, device=device)}


# --- linear algebra and reductions ----------------------------------------------------------
def matmul(a, b):
    if a.dtype in F8:
        return rounded(torch.matmul(a.to(F32), b.to(F32)), a.dtype)
    if not a.is_floating_point() and a.device.type != "cpu":
        return _int_matmul(a, b)
    return torch.matmul(a, b)


def _int_matmul(a, b):
    """Exact integer matmul where the device has no integer GEMM (CUDA and most NPUs)."""
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    out = (a2.unsqueeze(-1) * b2.unsqueeze(-3)).sum(-2, dtype=a.dtype)
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out


def sum_(x, *, axis=None, keepdims=False):
    if axis == ():
        return x.clone()
    if x.dtype in F8:
        return rounded(torch.sum(x.to(F32), dim=axis, keepdim=keepdims), x.dtype)
    return torch.sum(x, dim=axis, keepdim=keepdims, dtype=x.dtype)


def max_(x, *, axis=None, keepdims=False):
    if axis == ():
        return x.clone()
    dims = tuple(range(x.ndim)) if axis is None else axis
    if x.dtype in F8:
        return torch.amax(x.to(F32), dim=dims, keepdim=keepdims).to(x.dtype)
    return torch.amax(x, dim=dims, keepdim=keepdims)


def mean(x, *, axis=None, keepdims=False):
    if axis == ():
        return x.clone()
    if x.dtype in F8:
        return rounded(torch.mean(x.to(F32), dim=axis, keepdim=keepdims), x.dtype)
    return torch.mean(x, dim=axis, keepdim=keepdims)


def argmax(x, *, axis=-1, keepdims=False):
    if x.ndim == 0:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    if x.dtype in F8 or (x.dtype in _HALF and x.device.type == "cpu" and x.numel() > _ARGMAX_UPCAST_MIN):
        # exact (float32 holds every half value); torch's CPU argmax over bfloat16 logits
        # (8 x 32000) takes 1.3 ms, over their float32 copy 0.73 ms including the copy
        x = x.to(F32)
    # torch returns the first maximum, and the first NaN counts as the maximum (as numpy).
    return torch.argmax(x, dim=axis, keepdim=keepdims)


# --- indexing -------------------------------------------------------------------------------
_FEW = 64  # up to this many CPU indices, Python's min/max over tolist() beats torch.aminmax


def _checked_index(index, n: int, axis: int):
    """Indices as int64, checked to lie in [0, n) (accel.core.bounds: no negative wraps).

    Checked on the host (a sync on an accelerator): CUDA would otherwise hit a device-side
    assert that poisons the whole context, and numpy's reference raises here.
    """
    count = index.numel()
    if count == 0:
        return index.to(torch.int64)
    if count <= _FEW and index.device.type == "cpu":
        values = index.tolist() if index.ndim == 1 else index.reshape(-1).tolist()
        lo, hi = min(values), max(values)  # a KV-cache write of one position: ~1 µs, not ~8
    else:
        lo, hi = (int(v) for v in torch.aminmax(index))
    check_bounds(lo, hi, n, axis=axis)
    return index.to(torch.int64)


def gather(x, indices, *, axis=0):
    shape = tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:])
    if x.device.type == "cpu":
        # The CPU kernel checks bounds itself (and rejects negatives): try it first, and take
        # the checked path only when it refuses, to name the bad index.
        try:
            return torch.index_select(x, axis, indices.reshape(-1)).reshape(shape)
        except (IndexError, RuntimeError):
            pass
    idx = _checked_index(indices, x.shape[axis], axis)
    return torch.index_select(x, axis, idx.reshape(-1)).reshape(shape)


def index_copy_inplace(x, index, values, *, axis=0):
    # Checked before writing (torch's CPU kernel checks while it writes and would leave a
    # partly updated tensor behind).
    idx = _checked_index(index, x.shape[axis], axis)
    if x.is_inference() and not torch.is_inference_mode_enabled():
        # Made under torch.inference_mode() (a KV cache of an earlier generate call), written to
        # outside it: torch refuses that to protect its autograd, which accel never uses.
        with torch.inference_mode():
            return index_copy_inplace(x, idx, values, axis=axis)
    if x.dtype in F8:  # no float8 index_copy kernel: move the bytes instead (exact)
        x.view(torch.uint8).index_copy_(axis, idx, values.view(torch.uint8))
    else:
        x.index_copy_(axis, idx, values)


def index_copy(x, index, values, *, axis=0):
    out = x.clone()
    index_copy_inplace(out, index, values, axis=axis)
    return out


def index_add(x, index, values, *, axis=0):
    """Scatter-add (repeats accumulate); float16/bfloat16 sum in float32 and round once."""
    idx = _checked_index(index, x.shape[axis], axis)
    return index_add_unchecked(x, idx, values, axis=axis)


def index_add_unchecked(x, index, values, *, axis=0):
    if x.dtype in _HALF:
        return x.to(F32).index_add_(axis, index, values.to(F32)).to(x.dtype)
    return x.index_add(axis, index.to(torch.int64), values)


# --- the table ------------------------------------------------------------------------------
PRIMITIVE_KERNELS = {
    ops.cast: cast,
    ops.neg: _f8_unary(torch.neg),
    ops.abs: _f8_unary(torch.abs),
    ops.exp: _math_unary(torch.exp),
    ops.log: _math_unary(torch.log),
    ops.sqrt: _math_unary(torch.sqrt),
    ops.sin: _math_unary(torch.sin),
    ops.cos: _math_unary(torch.cos),
    ops.tanh: _math_unary(torch.tanh),
    ops.erf: _math_unary(torch.erf),
    ops.add: _f8_binary(torch.add),
    ops.sub: _f8_binary(torch.sub),
    ops.mul: _f8_binary(torch.mul),
    ops.div: _f8_binary(torch.div),
    ops.pow: _math_binary(torch.pow),
    ops.maximum: _f8_binary(torch.maximum),
    ops.minimum: _f8_binary(torch.minimum),
    ops.eq: _f8_compare(torch.eq),
    ops.lt: _f8_compare(torch.lt),
    ops.gt: _f8_compare(torch.gt),
    ops.logical_not: torch.logical_not,
    ops.where: torch.where,
    ops.matmul: matmul,
    ops.sum: sum_,
    ops.max: max_,
    ops.argmax: argmax,
    ops.reshape: lambda x, *, shape: torch.reshape(x, shape),
    ops.permute: lambda x, *, axes: torch.permute(x, axes),
    ops.broadcast_to: lambda x, *, shape: torch.broadcast_to(x, shape),
    ops.concat: lambda xs, *, axis=0: torch.cat(xs, dim=axis),
    ops.slice: basic_slice,
    ops.gather: gather,
    ops.index_copy: index_copy,
    ops.index_add: index_add,
    # composites torch has one call for: saves the decomposition's extra dispatches
    ops.rsqrt: _math_unary(torch.rsqrt),
    ops.silu: _math_unary(F.silu),
    ops.mean: mean,
    ops.ne: _f8_compare(torch.ne),
    ops.le: _f8_compare(torch.le),
    ops.ge: _f8_compare(torch.ge),
    ops.logical_and: torch.logical_and,
    ops.logical_or: torch.logical_or,
}

INPLACE_KERNELS = {ops.index_copy: index_copy_inplace}

# Run on float8 storage directly (data movement, selection, casts): not emulated.
FLOAT8_NATIVE = frozenset((ops.cast, ops.where, ops.reshape, ops.permute, ops.broadcast_to, ops.concat,
                           ops.slice, ops.gather, ops.index_copy, ops.logical_not, ops.logical_and,
                           ops.logical_or))
