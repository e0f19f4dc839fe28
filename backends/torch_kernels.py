"""torch kernels for every accel primitive and the composites torch fuses, with the numpy
reference backend's semantics.

float16/bfloat16 run natively: torch's CPU and CUDA kernels compute them in float32 internally
and round once, as the reference does. float8 has storage, casts and data movement in torch but
almost no arithmetic kernels, so arithmetic on float8 goes through float32 and rounds once
(`EMULATED_FLOAT8` lists those ops; `accel info` shows it). Kernels that need the device
(creation ops, scaled_matmul) are built per backend instance by `kernels_for(device)`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from accel import dtypes as dt
from accel import ops

TORCH_DTYPES = {
    dt.float64: torch.float64, dt.float32: torch.float32, dt.float16: torch.float16,
    dt.bfloat16: torch.bfloat16, dt.float8_e4m3fn: torch.float8_e4m3fn,
    dt.float8_e5m2: torch.float8_e5m2, dt.int8: torch.int8, dt.int32: torch.int32,
    dt.int64: torch.int64, dt.bool_: torch.bool,
}
ACCEL_DTYPES = {v: k for k, v in TORCH_DTYPES.items()}

_F8 = frozenset((torch.float8_e4m3fn, torch.float8_e5m2))
_LOW = frozenset((torch.float16, torch.bfloat16)) | _F8
_F32 = torch.float32
_FLOAT8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
_E4M3FN = torch.float8_e4m3fn


def rounded(y, dtype):
    """y (a float32/float64 result) rounded to `dtype` with the format's overflow rule.

    torch saturates to ±448 when converting to float8_e4m3fn; the format (and ml_dtypes, the
    reference) has no infinity, so out-of-range values and ±inf become NaN. 464 is the midpoint
    to the next (absent) binade step and rounds to even (448). float64 is judged after its
    rounding to float32, as ml_dtypes converts through float32."""
    out = y.to(dtype)
    if dtype != _E4M3FN:
        return out
    src = y.to(_F32) if y.dtype == torch.float64 else y
    return torch.where(src.abs() > 464.0, torch.full((), float("nan"), dtype=dtype, device=y.device), out)


# --- float8 emulation wrappers --------------------------------------------------------------
def _f8_unary(fn):
    def kernel(x):
        if x.dtype in _F8:
            return rounded(fn(x.to(_F32)), x.dtype)
        return fn(x)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


def _math_unary(fn):
    """A transcendental function: torch's vectorised (contiguous) and scalar (strided) loops
    round differently in the last bit, and the conformance suite requires a permuted or sliced
    input to give exactly the contiguous result, so strided inputs are made dense first."""
    def kernel(x):
        if not x.is_contiguous():
            x = x.contiguous()
        if x.dtype in _F8:
            return rounded(fn(x.to(_F32)), x.dtype)
        return fn(x)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


def _math_binary(fn):
    def kernel(x, y):
        x = x if x.is_contiguous() else x.contiguous()
        y = y if y.is_contiguous() else y.contiguous()
        if x.dtype in _F8:
            return rounded(fn(x.to(_F32), y.to(_F32)), x.dtype)
        return fn(x, y)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


def _f8_binary(fn):
    def kernel(x, y):
        if x.dtype in _F8:
            return rounded(fn(x.to(_F32), y.to(_F32)), x.dtype)
        return fn(x, y)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


def _f8_compare(fn):
    def kernel(x, y):
        if x.dtype in _F8:
            return fn(x.to(_F32), y.to(_F32))
        return fn(x, y)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


# --- cast -----------------------------------------------------------------------------------
def _f64_to_f32_round_to_odd(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounding to odd, so a second rounding (to float16) is exact RNE.

    torch converts double -> half through float, which double-rounds; numpy rounds once. Round
    to odd keeps the sticky information in the last float32 bit, which is enough because
    float32 carries more than two bits beyond float16's mantissa.
    """
    f = x.to(_F32)
    back = f.to(torch.float64)
    inexact = (back != x) & torch.isfinite(f)
    even = (f.view(torch.int32) & 1) == 0
    toward = torch.where(x > back, torch.full_like(f, float("inf")), torch.full_like(f, float("-inf")))
    return torch.where(inexact & even, torch.nextafter(f, toward), f)


def cast(x, *, dtype, saturate=False):
    target = TORCH_DTYPES[dtype]
    if not x.is_floating_point():
        if x.dtype == target:
            return x.clone()
        if target == _E4M3FN and x.dtype in (torch.int32, torch.int64):  # past 464: NaN, as floats
            return torch.where(x.abs() > 464, torch.full((), float("nan"), dtype=target, device=x.device),
                               x.to(target))
        return x.to(target)
    if saturate and target in _FLOAT8_MAX:
        top = _FLOAT8_MAX[target]
        if x.dtype in _F8:
            x = x.to(_F32)
        x = torch.where(torch.isnan(x), x, x.clamp(-top, top))
    if x.dtype == target:
        return x.clone()  # numpy's astype copies; a later in-place update must not alias
    if not target.is_floating_point:
        if x.dtype in _F8:
            x = x.to(_F32)
        return torch.trunc(x).to(target)  # float -> int/bool truncates toward zero, as numpy
    if x.dtype == torch.float64 and target == torch.float16:
        x = _f64_to_f32_round_to_odd(x)
    elif x.dtype in _LOW and target in _LOW:
        x = x.to(_F32)  # exact; not every low -> low pair has a direct conversion
    if x.dtype in _F8:
        x = x.to(_F32)  # exact; the overflow rule below reads the value
    return rounded(x, target)




# --- creation (device-bound, see kernels_for) -----------------------------------------------
def exact_value(value, dtype):
    """`value` rounded to `dtype` the way numpy/ml_dtypes round it, as a Python number."""
    v = np.full((), value, dtype=dtype.numpy)[()]  # numpy's own conversion, errors included
    if dtype.is_floating:
        return float(v)
    return bool(v) if dtype is dt.bool_ else int(v)


def _full(*, shape, value, dtype, device):
    return torch.full(shape, exact_value(value, dtype), dtype=TORCH_DTYPES[dtype], device=device)


def _arange(*, start, stop, step, dtype, device):
    # Built on the host exactly as the reference does (float64 then rounded), then moved.
    host = np.arange(start, stop, step, dtype=np.float64 if dtype.is_floating else np.int64)
    return cast(torch.from_numpy(host).to(device), dtype=dtype)  # numpy's rounding, any dtype


# --- linear algebra and reductions ----------------------------------------------------------
def matmul(a, b):
    if a.dtype in _F8:
        return rounded(torch.matmul(a.to(_F32), b.to(_F32)), a.dtype)
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
    if x.dtype in _F8:
        return rounded(torch.sum(x.to(_F32), dim=axis, keepdim=keepdims), x.dtype)
    return torch.sum(x, dim=axis, keepdim=keepdims, dtype=x.dtype)


def max_(x, *, axis=None, keepdims=False):
    if axis == ():
        return x.clone()
    dims = tuple(range(x.ndim)) if axis is None else axis
    if x.dtype in _F8:
        return torch.amax(x.to(_F32), dim=dims, keepdim=keepdims).to(x.dtype)
    return torch.amax(x, dim=dims, keepdim=keepdims)


def mean(x, *, axis=None, keepdims=False):
    if axis == ():
        return x.clone()
    if x.dtype in _F8:
        return rounded(torch.mean(x.to(_F32), dim=axis, keepdim=keepdims), x.dtype)
    return torch.mean(x, dim=axis, keepdim=keepdims)


def argmax(x, *, axis=-1, keepdims=False):
    if x.ndim == 0:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    if x.dtype in _F8:
        x = x.to(_F32)
    # torch returns the first maximum, and the first NaN counts as the maximum (as numpy).
    return torch.argmax(x, dim=axis, keepdim=keepdims)


# --- movement -------------------------------------------------------------------------------
def slice_(x, *, axes, starts, stops, steps=None):
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, stops, steps or (1,) * len(axes)):
        index[a] = slice(s, e, st)
    return x[tuple(index)]


# --- indexing -------------------------------------------------------------------------------
def _checked_index(index, n: int, axis: int):
    """Indices as int64 in [0, n): negatives wrap as in numpy; out of range raises IndexError.

    Checked on the host (a sync on an accelerator): CUDA would otherwise hit a device-side
    assert that poisons the whole context, and numpy's reference raises here.
    """
    if index.numel() == 0:
        return index.to(torch.int64)
    lo, hi = (int(v) for v in torch.aminmax(index))
    if lo < -n or hi >= n:
        bad = lo if lo < -n else hi
        raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
    index = index.to(torch.int64)
    return torch.where(index < 0, index + n, index) if lo < 0 else index


def gather(x, indices, *, axis=0):
    shape = tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:])
    if x.device.type == "cpu":
        # The CPU kernel checks bounds itself (and rejects negatives): try it first, and take
        # the checked path only when it refuses, to wrap negatives or name the bad index.
        try:
            return torch.index_select(x, axis, indices.reshape(-1)).reshape(shape)
        except (IndexError, RuntimeError):
            pass
    idx = _checked_index(indices, x.shape[axis], axis)
    return torch.index_select(x, axis, idx.reshape(-1)).reshape(shape)


def index_copy_inplace(x, index, values, *, axis=0):
    idx = _checked_index(index, x.shape[axis], axis)
    if x.dtype in _F8:  # no float8 index_copy kernel: move the bytes instead (exact)
        x.view(torch.uint8).index_copy_(axis, idx, values.view(torch.uint8))
    else:
        x.index_copy_(axis, idx, values)


def index_copy(x, index, values, *, axis=0):
    out = x.clone()
    index_copy_inplace(out, index, values, axis=axis)
    return out


# --- fused composites -----------------------------------------------------------------------
def _up(x):
    return x.to(_F32) if x.dtype in _LOW else x


def softmax(x, *, axis=-1):
    if x.dtype in _LOW:
        return rounded(torch.softmax(x, axis, dtype=_F32), x.dtype)
    return torch.softmax(x, axis)


def log_softmax(x, *, axis=-1):
    if x.dtype in _LOW:
        return rounded(torch.log_softmax(x, axis, dtype=_F32), x.dtype)
    return torch.log_softmax(x, axis)


def gelu(x, *, approximate="none"):
    if not x.is_contiguous():
        x = x.contiguous()  # see _math_unary
    if x.dtype in _F8:
        return rounded(F.gelu(x.to(_F32), approximate=approximate), x.dtype)
    return F.gelu(x, approximate=approximate)


def rms_norm(x, weight=None, *, eps=1e-6):
    # As the declaration (and Hugging Face Llama): normalise in float32, round, then scale.
    if x.dtype not in _LOW and x.numel():  # no rounding step in between: one fused call
        return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    if x.numel() == 0:
        y = x.clone()
    else:
        y = rounded(F.rms_norm(_up(x), (x.shape[-1],), eps=eps), x.dtype)
    if weight is None:
        return y
    return rounded(y.to(_F32) * weight.to(_F32), x.dtype) if x.dtype in _F8 else y * weight


def layer_norm(x, weight=None, bias=None, *, eps=1e-5):
    if x.dtype not in _LOW and x.numel():  # no rounding step in between: one fused call
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=eps)
    if x.numel() == 0:
        y = x.clone()
    else:
        y = rounded(F.layer_norm(_up(x), (x.shape[-1],), eps=eps), x.dtype)
    if x.dtype in _F8:
        y = y.to(_F32)
        weight = None if weight is None else weight.to(_F32)
        bias = None if bias is None else bias.to(_F32)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return rounded(y, x.dtype) if x.dtype in _F8 else y


def rope(x, cos, sin):
    # Low precision computes in float32 and rounds once: the float16 decomposition rounds three
    # times and loses ~1e-3 relative where x*cos and rotated*sin nearly cancel.
    dtype = x.dtype
    if dtype in _LOW:
        x, cos, sin = x.to(_F32), cos.to(_F32), sin.to(_F32)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return rounded(x * cos + rotated * sin, dtype)


def linear(x, weight, bias=None):
    if x.dtype in _F8:
        out = F.linear(x.to(_F32), weight.to(_F32), None if bias is None else bias.to(_F32))
        return rounded(out, x.dtype)
    return F.linear(x, weight, bias)


def embedding(weight, ids):
    return gather(weight, ids, axis=0)


def cross_entropy(logits, targets, *, ignore_index=-100, reduction="mean"):
    classes = logits.shape[-1]
    flat_targets = targets.reshape(-1).to(torch.int64)
    if logits.device.type != "cpu" and flat_targets.numel():
        # torch checks targets on the CPU; on a device a bad target is a device-side assert.
        bad = (flat_targets != ignore_index) & ((flat_targets < 0) | (flat_targets >= classes))
        if bool(bad.any()):
            raise IndexError(f"target {int(flat_targets[bad][0])} is out of bounds for {classes} classes")
    out = F.cross_entropy(_up(logits).reshape(-1, classes), flat_targets,
                          ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        out = out.reshape(targets.shape)
    return rounded(out, logits.dtype)


def attention(q, k, v, mask=None, *, causal=False, scale=None):
    b, hq, t, _ = q.shape
    hk, s = k.shape[1], k.shape[2]
    dtype = q.dtype
    if q.numel() == 0 or s == 0:  # nothing to attend to: the declaration says zeros
        return torch.zeros((b, hq, t, v.shape[3]), dtype=dtype, device=q.device)
    if dtype in _F8 or (dtype in _LOW and q.device.type == "cpu"):
        # float32 inside, one rounding (the declaration). torch's CPU half-precision SDPA keeps
        # the probabilities in half precision (2 ulp off); on accelerators the flash/efficient
        # kernels do the same but are the point of fusing, and the accumulating thresholds hold.
        q, k, v = q.to(_F32), k.to(_F32), v.to(_F32)
    allowed = mask
    if allowed is not None and allowed.ndim < 4:
        allowed = allowed.reshape((1,) * (4 - allowed.ndim) + tuple(allowed.shape))
    if causal and allowed is not None:  # SDPA takes a mask or is_causal, not both
        tri = torch.ones((t, s), dtype=torch.bool, device=q.device).tril()
        allowed = allowed & tri
    if hq != hk:
        if _HAS_ENABLE_GQA:
            extra = {"enable_gqa": True}
        else:  # pragma: no cover - torch < 2.5
            k = k.repeat_interleave(hq // hk, dim=1)
            v = v.repeat_interleave(hq // hk, dim=1)
            extra = {}
    else:
        extra = {}
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                         is_causal=bool(causal and allowed is None),
                                         scale=scale, **extra)
    if allowed is not None:
        # A fully masked row outputs zeros (the declaration); some SDPA kernels give NaN there.
        out = torch.where(allowed.any(-1, keepdim=True), out, 0.0)
    return rounded(out, dtype)


def _has_enable_gqa() -> bool:
    import inspect

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # builtins without a signature: try a tiny call instead
        try:
            z = torch.zeros(1, 2, 1, 1)
            F.scaled_dot_product_attention(z, z[:, :1], z[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False


_HAS_ENABLE_GQA = _has_enable_gqa()


# --- scaled_matmul --------------------------------------------------------------------------
def scaled_matmul_emulated(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    """What torch._scaled_mm computes, in float32: exact float8 products, float32 accumulation,
    then the scales, then one rounding to out_dtype."""
    out = torch.matmul(a.to(_F32), b.to(_F32))
    out = out * scale_a.to(_F32) * scale_b.to(_F32)
    return out.to(TORCH_DTYPES[out_dtype])


def scaled_matmul_cuda(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    """torch._scaled_mm where its layout/dtype rules allow, else the exact emulation."""
    m, kdim = a.shape
    n = b.shape[1]
    target = TORCH_DTYPES[out_dtype]
    both_e5m2 = a.dtype == torch.float8_e5m2 and b.dtype == torch.float8_e5m2
    per_tensor = scale_a.numel() == 1 and scale_b.numel() == 1
    rowwise = (tuple(scale_a.shape) == (m, 1) and tuple(scale_b.shape) == (1, n)
               and a.dtype == b.dtype == torch.float8_e4m3fn and target == torch.bfloat16)
    if both_e5m2 or kdim % 16 or n % 16 or not (per_tensor or rowwise):
        return scaled_matmul_emulated(a, b, scale_a, scale_b, out_dtype=out_dtype)
    sa = scale_a.to(_F32).reshape(()) if per_tensor else scale_a.to(_F32).contiguous()
    sb = scale_b.to(_F32).reshape(()) if per_tensor else scale_b.to(_F32).contiguous()
    b_col_major = b.t().contiguous().t()  # _scaled_mm wants the right operand column-major
    try:
        return torch._scaled_mm(a.contiguous(), b_col_major, scale_a=sa, scale_b=sb, out_dtype=target)
    except RuntimeError as exc:  # a layout/dtype rule of this torch/cuBLASLt version we missed
        from accel.dispatch import stats

        stats.warn_once(("torch", "scaled_matmul", "_scaled_mm"),
                        f"accel: torch._scaled_mm refused {list(a.shape)}@{list(b.shape)} "
                        f"({a.dtype}, {b.dtype} -> {target}): {exc}; using the float32 emulation")
        return scaled_matmul_emulated(a, b, scale_a, scale_b, out_dtype=out_dtype)


# --- the table ------------------------------------------------------------------------------
KERNELS = {
    ops.cast: cast,
    ops.neg: _f8_unary(torch.neg),
    ops.abs: _f8_unary(torch.abs),
    ops.exp: _math_unary(torch.exp),
    ops.log: _math_unary(torch.log),
    ops.sqrt: _math_unary(torch.sqrt),
    ops.rsqrt: _math_unary(torch.rsqrt),
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
    ops.ne: _f8_compare(torch.ne),
    ops.le: _f8_compare(torch.le),
    ops.ge: _f8_compare(torch.ge),
    ops.logical_not: torch.logical_not,
    ops.logical_and: torch.logical_and,
    ops.logical_or: torch.logical_or,
    ops.where: torch.where,
    ops.matmul: matmul,
    ops.sum: sum_,
    ops.max: max_,
    ops.mean: mean,
    ops.argmax: argmax,
    ops.reshape: lambda x, *, shape: torch.reshape(x, shape),
    ops.permute: lambda x, *, axes: torch.permute(x, axes),
    ops.broadcast_to: lambda x, *, shape: torch.broadcast_to(x, shape),
    ops.concat: lambda xs, *, axis=0: torch.cat(xs, dim=axis),
    ops.slice: slice_,
    ops.gather: gather,
    ops.index_copy: index_copy,
    # fused composites
    ops.softmax: softmax,
    ops.log_softmax: log_softmax,
    ops.silu: _math_unary(F.silu),
    ops.gelu: gelu,
    ops.rms_norm: rms_norm,
    ops.layer_norm: layer_norm,
    ops.rope: rope,
    ops.linear: linear,
    ops.embedding: embedding,
    ops.cross_entropy: cross_entropy,
    ops.attention: attention,
}

INPLACE_KERNELS = {ops.index_copy: index_copy_inplace}

# Ops whose float8 inputs are computed in float32 and rounded once (torch has no float8 kernel
# for them); data movement, casts, where/gather/concat run on float8 storage directly.
EMULATED_FLOAT8 = tuple(sorted(
    op.name for op in KERNELS
    if op not in (ops.cast, ops.where, ops.reshape, ops.permute, ops.broadcast_to, ops.concat,
                  ops.slice, ops.gather, ops.index_copy, ops.embedding, ops.logical_not,
                  ops.logical_and, ops.logical_or)))


def kernels_for(device: torch.device, *, native_scaled_mm: bool) -> dict:
    """The kernel table for one device: creation ops bind the device, scaled_matmul picks
    torch._scaled_mm where the hardware has float8 GEMMs."""
    table = dict(KERNELS)
    table[ops.full] = functools.partial(_full, device=device)
    table[ops.arange] = functools.partial(_arange, device=device)
    scaled = getattr(ops, "scaled_matmul", None)
    if scaled is not None:
        table[scaled] = scaled_matmul_cuda if native_scaled_mm else scaled_matmul_emulated
    return table
