"""FP8 compute: quantize/dequantize with a scale, the block-scaled GEMM, and the FP8 linear.

Scales follow the dequantizing convention throughout (x ≈ q · scale; Transformer Engine calls it
`scale_inv`): quantize divides by the scale in float32 and rounds once to float8 with saturation.
A scale covers one block of a 2-d tensor; the block shape names the recipe:

    tensor-wise  (R, C)        one scale                     (Transformer Engine, torchao)
    row-wise     (1, C)        one per row (token / output channel)             (torchao)
    column-wise  (R, 1)        one per column (the other GEMM operand of a backward GEMM)
    block-wise   (1, 128) activations and gradients, (128, 128) weights   (DeepSeek-V3)

Everything here is a composite of existing primitives (cast with saturate, div, mul, max, abs,
reshape, broadcast_to, concat, matmul), so every backend runs it; the float8 GEMMs of tensor- and
row-wise scaling go through `scaled_matmul`, which the torch backend runs on `torch._scaled_mm`
on CUDA devices of compute capability 8.9+. Elsewhere the GEMM is emulated exactly: float8
values and their scales are expanded to float32 (exact up to one float32 rounding of q·scale)
and multiplied with float32 accumulation. See docs/fp8.md.
"""
from __future__ import annotations

import math

import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import as_dtype
from accel.core.errors import DTypeError, OpError, ShapeError
from accel.core.op import COMPOSITE, Op
from accel.ops._rules import broadcast_shapes, spec
from accel.ops.elementwise import abs as _abs, add, cast, cast_reference, div, gt, mul, where
from accel.ops.creation import full_like, zeros
from accel.ops.linalg import matmul
from accel.ops.movement import broadcast_to, concat, reshape, transpose
from accel.ops.quant import scaled_matmul
from accel.ops.reduction import max as _max, sum as _sum

# The largest finite value of each float8 format: saturation clamps here, scales aim here.
FLOAT8_MAX = {dt.float8_e4m3fn: 448.0, dt.float8_e5m2: 57344.0}
GRANULARITIES = ("tensor", "row", "block")
DEFAULT_BLOCK = 128


def _float8(value, what: str) -> dt.DType:
    dtype = as_dtype(value)
    if dtype not in dt.FLOAT8_DTYPES:
        raise DTypeError(f"{what} must be float8_e4m3fn or float8_e5m2, got {dtype.name}",
                         hint="FP8 recipes use e4m3fn (more precision) or e5m2 (more range)")
    return dtype


# --- block geometry ---------------------------------------------------------------------------
def _block_shape(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """A block shape with -1 or an oversize side meaning 'the whole dimension'."""
    return tuple(s if b in (-1, None) or b >= s else b for s, b in zip(shape, block))


def scale_shape(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """How many scales a (R, C) tensor has in blocks of `block` (partial blocks at the edge count)."""
    br, bc = _block_shape(shape, block)
    return (-(-shape[0] // max(br, 1)), -(-shape[1] // max(bc, 1)))


def expand_scales(scale, block: tuple[int, int], shape: tuple[int, int]):
    """Each block's scale repeated over its block and cropped to `shape` (R, C), in accel ops."""
    br, bc = _block_shape(shape, block)
    sr, sc = scale.shape
    if (sr, sc) == (1, 1):
        return scale  # broadcasts as it is
    full = broadcast_to(reshape(scale, (sr, 1, sc, 1)), (sr, br, sc, bc))
    full = reshape(full, (sr * br, sc * bc))                         # (R', C') padded
    if (sr * br, sc * bc) != tuple(shape):
        full = full[: shape[0], : shape[1]]
    return full


def _pad_to_blocks(x, block: tuple[int, int]):
    r, c = x.shape
    br, bc = block
    pr, pc = (-r) % br, (-c) % bc
    if pc:
        x = concat([x, zeros((r, pc), x.dtype, x.backend)], 1)
    if pr:
        x = concat([x, zeros((pr, c + pc), x.dtype, x.backend)], 0)
    return x


def block_amax(x, block: tuple[int, int]):
    """max |x| per block of a 2-d float32 tensor: shape scale_shape(x.shape, block)."""
    r, c = x.shape
    br, bc = _block_shape((r, c), block)
    if r == 0 or c == 0:
        return zeros(scale_shape((r, c), block), dt.float32, x.backend)
    if (br, bc) == (r, c):
        return reshape(_max(_abs(x)), (1, 1))
    padded = _pad_to_blocks(_abs(x), (br, bc))
    rr, cc = padded.shape
    return _max(reshape(padded, (rr // br, br, cc // bc, bc)), (1, 3))  # (R/br, C/bc)


def scale_from_amax(amax, dtype, margin: int = 0):
    """Dequantizing scale amax · 2^margin / FLOAT8_MAX: the block's largest value lands on the
    format's largest finite value (less `margin` binades of headroom). A zero block gets 1.0, so
    the scale stays finite and the block quantizes to zeros."""
    target = FLOAT8_MAX[_float8(dtype, "dtype")] / (2.0 ** margin)
    scale = div(amax, target)
    return where(gt(amax, 0.0), scale, full_like(scale, 1.0))


# --- quantize / dequantize --------------------------------------------------------------------
def _quantize_infer(x, scale, *, dtype=dt.float8_e4m3fn, saturate=True):
    if not x.dtype.is_floating or x.dtype in dt.FLOAT8_DTYPES:
        raise DTypeError(f"x must be float32, bfloat16, float16 or float64, got {x.dtype.name}",
                         hint="quantize high-precision values; a float8 tensor is already quantized")
    _float8(dtype, "dtype")
    if scale.dtype is not dt.float32:
        raise DTypeError(f"scale must be float32, got {scale.dtype.name}", hint="cast the scale to float32")
    if broadcast_shapes(x.shape, scale.shape) != tuple(x.shape):
        raise ShapeError(f"scale {list(scale.shape)} does not broadcast to x {list(x.shape)}",
                         hint="expand block scales over their blocks first (accel.ops.fp8.expand_scales)")
    return spec(x.shape, as_dtype(dtype))


def _prepare_quantize(args, attrs):
    return args, {"dtype": _float8(attrs["dtype"], "dtype"), "saturate": bool(attrs["saturate"])}


def quantize_fp8_reference(x, scale, *, dtype=dt.float8_e4m3fn, saturate=True):
    """float32 division, then one round-to-nearest-even to float8 (ml_dtypes)."""
    q = np.asarray(x).astype(np.float32) / np.asarray(scale).astype(np.float32)
    return cast_reference(q.astype(np.float32), dtype=dtype, saturate=saturate)


def _quantize_decomposition(x, scale, dtype=dt.float8_e4m3fn, saturate=True):
    return cast(div(cast(x, dt.float32), scale), dtype, saturate)


def _quantize_vjp(g, out, x, scale, *, dtype=dt.float8_e4m3fn, saturate=True):
    # Straight-through: the rounding is treated as the identity (as every FP8 recipe does).
    return (cast(div(cast(g, dt.float32), scale), x.dtype), None)


quantize_fp8 = Op(
    "quantize_fp8", kind=COMPOSITE, inputs=("x", "scale"),
    attrs={"dtype": dt.float8_e4m3fn, "saturate": True}, infer=_quantize_infer,
    reference=quantize_fp8_reference, decompose=_quantize_decomposition, prepare=_prepare_quantize,
    vjp=_quantize_vjp, dtypes=(dt.float32, dt.bfloat16, dt.float16), exact=True,
    cases={"family": "fp8_quantize"},
    doc="""float8 q = round(x / scale): the division in float32, one round-to-nearest-even.

    scale is float32 and broadcasts to x (a scalar, per-row (R, 1), or block scales expanded with
    `expand_scales`). saturate=True (default) clamps finite values to ±448 (e4m3fn) / ±57344
    (e5m2), as scaled FP8 recipes expect; saturate=False keeps the format's overflow rule
    (e4m3fn: NaN, e5m2: ±inf). NaN stays NaN. Bit-exact against ml_dtypes.""",
)


def _dequantize_infer(q, scale, *, dtype=dt.float32):
    if q.dtype not in dt.FLOAT8_DTYPES:
        raise DTypeError(f"q must be float8_e4m3fn or float8_e5m2, got {q.dtype.name}",
                         hint="dequantize float8 values produced by quantize_fp8")
    if scale.dtype is not dt.float32:
        raise DTypeError(f"scale must be float32, got {scale.dtype.name}", hint="cast the scale to float32")
    return spec(q.shape, as_dtype(dtype))


def _prepare_dequantize(args, attrs):
    return args, {"dtype": as_dtype(attrs["dtype"])}


def dequantize_fp8_reference(q, scale, *, dtype=dt.float32):
    return np.asarray(q, np.float64) * np.asarray(scale, np.float64)


dequantize_fp8 = Op(
    "dequantize_fp8", kind=COMPOSITE, inputs=("q", "scale"), attrs={"dtype": dt.float32},
    infer=_dequantize_infer, reference=dequantize_fp8_reference, prepare=_prepare_dequantize,
    decompose=lambda q, scale, dtype=dt.float32: cast(mul(cast(q, dt.float32), scale), dtype),
    dtypes=dt.FLOAT8_DTYPES, cases={"family": "fp8_dequantize"},
    doc="q · scale in float32, rounded once to `dtype` (float32 default): the inverse of quantize_fp8.",
)


def quantize_blocks(x, dtype, block: tuple[int, int], scale=None, margin: int = 0):
    """(q, scale) of a 2-d tensor in blocks of `block`; the scale from each block's amax unless
    given (delayed scaling passes the one its amax history made)."""
    x = cast(x, dt.float32)
    if scale is None:
        scale = scale_from_amax(block_amax(x, block), dtype, margin)
    return quantize_fp8(x, expand_scales(scale, block, x.shape), dtype, True), scale


# --- block-scaled GEMM ------------------------------------------------------------------------
def _as_block(value) -> tuple[int, int]:
    block = tuple(int(v) for v in value)
    if len(block) != 2 or any(v == 0 or v < -1 for v in block):
        raise ShapeError(f"a block is (rows, cols) with positive sizes (-1: the whole dimension), got {value!r}",
                         hint="e.g. (1, 128) for activations, (128, 128) for weights")
    return block


def _block_matmul_infer(a, b, scale_a, scale_b, *, block_a=(1, DEFAULT_BLOCK),
                        block_b=(DEFAULT_BLOCK, DEFAULT_BLOCK), out_dtype=dt.float32):
    for name, x in (("a", a), ("b", b)):
        _float8(x.dtype, name)
        if x.ndim != 2:
            raise ShapeError(f"{name} must be 2-d, got shape {list(x.shape)}",
                             hint="flatten the leading dims into rows first")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"contracting dimensions differ: a {list(a.shape)} @ b {list(b.shape)}",
                         hint="a is (M, K) and b is (K, N)")
    for name, x, s, block in (("a", a, scale_a, block_a), ("b", b, scale_b, block_b)):
        if s.dtype is not dt.float32:
            raise DTypeError(f"scale_{name} must be float32, got {s.dtype.name}", hint="cast it to float32")
        want = scale_shape(tuple(x.shape), _as_block(block))
        if tuple(s.shape) != want:
            raise ShapeError(f"scale_{name} has shape {list(s.shape)}, but {name} {list(x.shape)} in "
                             f"blocks of {tuple(block)} needs {list(want)}",
                             hint="make the scales with accel.ops.fp8.quantize_blocks and the same block")
    out_dtype = as_dtype(out_dtype)
    if out_dtype not in (dt.float32, dt.bfloat16):
        raise DTypeError(f"out_dtype must be float32 or bfloat16, got {out_dtype.name}",
                         hint="accumulation is float32; round the result to bfloat16 at most")
    return spec((a.shape[0], b.shape[1]), out_dtype)


def _prepare_block_matmul(args, attrs):
    attrs = {"block_a": _as_block(attrs["block_a"]), "block_b": _as_block(attrs["block_b"]),
             "out_dtype": as_dtype(attrs["out_dtype"])}
    _block_matmul_infer(*args, **attrs)
    return args, attrs


def block_scaled_matmul_reference(a, b, scale_a, scale_b, *, block_a=(1, DEFAULT_BLOCK),
                                  block_b=(DEFAULT_BLOCK, DEFAULT_BLOCK), out_dtype=dt.float32):
    """Σ over K-blocks of scaled partial products, in float64 (numpy, block by block)."""
    def expand(s, block, shape):
        br, bc = _block_shape(shape, block)
        full = np.repeat(np.repeat(np.asarray(s, np.float64), br, 0), bc, 1)
        return full[: shape[0], : shape[1]]
    a64 = np.asarray(a, np.float64) * expand(scale_a, block_a, np.shape(a))
    b64 = np.asarray(b, np.float64) * expand(scale_b, block_b, np.shape(b))
    return a64 @ b64


def _block_matmul_decomposition(a, b, scale_a, scale_b, block_a=(1, DEFAULT_BLOCK),
                                block_b=(DEFAULT_BLOCK, DEFAULT_BLOCK), out_dtype=dt.float32):
    # Expanding the scales and multiplying once in float32 equals DeepSeek-V3's per-K-block
    # promotion (scaled float32 partial sums) up to float32 rounding, without a (K/128, M, N)
    # stack of partials.
    a32 = mul(cast(a, dt.float32), expand_scales(scale_a, block_a, a.shape))
    b32 = mul(cast(b, dt.float32), expand_scales(scale_b, block_b, b.shape))
    return cast(matmul(a32, b32), out_dtype)


block_scaled_matmul = Op(
    "block_scaled_matmul", kind=COMPOSITE, inputs=("a", "b", "scale_a", "scale_b"),
    attrs={"block_a": (1, DEFAULT_BLOCK), "block_b": (DEFAULT_BLOCK, DEFAULT_BLOCK), "out_dtype": dt.float32},
    infer=_block_matmul_infer, reference=block_scaled_matmul_reference,
    decompose=_block_matmul_decomposition, prepare=_prepare_block_matmul, dtypes=dt.FLOAT8_DTYPES,
    accumulating=True, cases={"family": "block_scaled_matmul"},
    doc="""(a · scale_a) @ (b · scale_b) for float8 a (M, K), b (K, N) with one float32 scale per
    block: scale_a (⌈M/ba0⌉, ⌈K/ba1⌉), scale_b (⌈K/bb0⌉, ⌈N/bb1⌉); edge blocks may be partial.
    Defaults are DeepSeek-V3's: 1×128 tiles for a (activations), 128×128 blocks for b (weights).
    float32 accumulation; out_dtype float32 (default) or bfloat16.""",
)


# --- the FP8 linear -----------------------------------------------------------------------------
def gemm_blocks(granularity: str, block: int) -> dict[str, tuple[int, int]]:
    """The block shape of each operand of the three GEMMs of a linear, per granularity.

    Forward y = x wᵀ contracts K; input grad dx = g w contracts N; weight grad dw = gᵀ x
    contracts M. Row-wise scales must lie along the non-contracted dim of each GEMM, so the
    weight is re-quantized column-wise for dx and x and g column-wise for dw (torchao's rowwise
    recipe); DeepSeek-V3's blocks turn 1×128 → 128×1 for dw. Keys: x, w (forward), g_dx, w_dx,
    g_dw, x_dw; shapes refer to x (M, K), w (N, K), g (M, N)."""
    if granularity == "tensor":
        whole = (-1, -1)
        return dict(x=whole, w=whole, g_dx=whole, w_dx=whole, g_dw=whole, x_dw=whole)
    if granularity == "row":
        return dict(x=(1, -1), w=(1, -1), g_dx=(1, -1), w_dx=(-1, 1), g_dw=(-1, 1), x_dw=(-1, 1))
    if granularity == "block":
        tile, square = (1, block), (block, block)
        return dict(x=tile, w=square, g_dx=tile, w_dx=square, g_dw=(block, 1), x_dw=(block, 1))
    raise OpError(f"unknown FP8 granularity {granularity!r}", hint=f"use one of: {', '.join(GRANULARITIES)}")


def fp8_gemm(a_q, a_scale, a_block, b_q, b_scale, b_block, granularity: str):
    """float32 (M, N) = (a_q · a_scale) @ (b_q · b_scale) for a (M, K), b (K, N).

    Tensor- and row-wise scales (one per tensor / per row of a, per column of b) go through
    scaled_matmul (torch._scaled_mm on CUDA ≥ 8.9); other blocks through block_scaled_matmul."""
    if granularity in ("tensor", "row") and a_scale.shape[1] == 1 and b_scale.shape[0] == 1:
        return scaled_matmul(a_q, b_q, a_scale, b_scale, out_dtype=dt.float32)
    return block_scaled_matmul(a_q, b_q, a_scale, b_scale, block_a=a_block, block_b=b_block,
                               out_dtype=dt.float32)


def _t(block: tuple[int, int]) -> tuple[int, int]:
    return (block[1], block[0])


def _fp8_linear_infer(x, weight, bias=None, x_scale=None, w_scale=None, g_scale=None, *,
                      granularity="tensor", x_dtype=dt.float8_e4m3fn, w_dtype=dt.float8_e4m3fn,
                      g_dtype=dt.float8_e5m2, block=DEFAULT_BLOCK, margin=0, observer=None):
    if granularity not in GRANULARITIES:
        raise OpError(f"unknown FP8 granularity {granularity!r}", hint=f"use one of: {', '.join(GRANULARITIES)}")
    for what, d in (("x_dtype", x_dtype), ("w_dtype", w_dtype), ("g_dtype", g_dtype)):
        _float8(d, what)
    if not x.dtype.is_floating or x.dtype in dt.FLOAT8_DTYPES:
        raise DTypeError(f"x must be a high-precision float tensor, got {x.dtype.name}",
                         hint="activations stay in float32/bfloat16; the op quantizes them")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(f"x {list(x.shape)} and weight {list(weight.shape)} do not fit (weight is (out, in))",
                         hint="x's last dim must equal weight.shape[1]")
    n, k = weight.shape
    if weight.dtype in dt.FLOAT8_DTYPES:
        if w_scale is None:
            raise OpError(f"weight is stored as {weight.dtype.name} but no w_scale was given",
                          hint="pass the scales saved with the float8 weight")
        want = scale_shape((n, k), gemm_blocks(granularity, block)["w"])
        if tuple(w_scale.shape) != want:
            raise ShapeError(f"w_scale {list(w_scale.shape)} does not fit a {granularity}-wise weight "
                             f"{list(weight.shape)} (needs {list(want)})",
                             hint="the stored weight was quantized with another recipe: re-quantize it")
    elif not weight.dtype.is_floating:
        raise DTypeError(f"weight must be floating, got {weight.dtype.name}", hint="cast it to float32")
    for name, s in (("x_scale", x_scale), ("g_scale", g_scale)) + ((("w_scale", w_scale),)
                                                                   if weight.dtype not in dt.FLOAT8_DTYPES else ()):
        if s is None:
            continue
        if granularity != "tensor" or tuple(s.shape) != (1, 1) or s.dtype is not dt.float32:
            raise ShapeError(f"{name} given as {s.dtype.name}{list(s.shape)}: only tensor-wise scaling takes "
                             f"precomputed scales, as float32 (1, 1)",
                             hint="row- and block-wise recipes scale from the current values; leave it None")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ShapeError(f"bias {list(bias.shape)} does not match {n} outputs", hint=f"bias is ({n},)")
    return spec(tuple(x.shape[:-1]) + (n,), x.dtype)


def _prepare_fp8_linear(args, attrs):
    attrs = dict(attrs)
    for key in ("x_dtype", "w_dtype", "g_dtype"):
        attrs[key] = _float8(attrs[key], key)
    attrs["block"], attrs["margin"] = int(attrs["block"]), int(attrs["margin"])
    _fp8_linear_infer(*args, **attrs)
    return args, attrs


def _weight_q(weight, w_scale, dtype, block, margin):
    if weight.dtype in dt.FLOAT8_DTYPES:
        return weight, w_scale
    return quantize_blocks(weight, dtype, block, w_scale, margin)


def _fp8_linear_decomposition(x, weight, bias=None, x_scale=None, w_scale=None, g_scale=None,
                              granularity="tensor", x_dtype=dt.float8_e4m3fn, w_dtype=dt.float8_e4m3fn,
                              g_dtype=dt.float8_e5m2, block=DEFAULT_BLOCK, margin=0, observer=None):
    n, k = weight.shape
    lead = tuple(x.shape[:-1])
    x2 = reshape(x, (math.prod(lead), k))                                      # (M, K)
    blocks = gemm_blocks(granularity, block)
    xq, sx = quantize_blocks(x2, x_dtype, blocks["x"], x_scale, margin)
    wq, sw = _weight_q(weight, w_scale, w_dtype, blocks["w"], margin)          # (N, K)
    y = fp8_gemm(xq, sx, blocks["x"], transpose(wq, 0, 1), transpose(sw, 0, 1), _t(blocks["w"]), granularity)
    if bias is not None:
        y = add(y, cast(bias, dt.float32))
    return cast(reshape(y, lead + (n,)), x.dtype)                               # (..., N)


def fp8_linear_reference(x, weight, bias=None, x_scale=None, w_scale=None, g_scale=None, *,
                         granularity="tensor", x_dtype=dt.float8_e4m3fn, w_dtype=dt.float8_e4m3fn,
                         g_dtype=dt.float8_e5m2, block=DEFAULT_BLOCK, margin=0, observer=None):
    """numpy: per-block amax and scale in float32, ml_dtypes rounding, float64 GEMM."""
    blocks = gemm_blocks(granularity, block)

    def quantize(v, dtype, blk, given):
        v = np.asarray(v, np.float32)
        r, c = v.shape
        br, bc = _block_shape((r, c), blk)
        if given is not None:
            s = np.asarray(given, np.float32)
        else:
            sr, sc = scale_shape((r, c), blk)
            padded = np.zeros((sr * br, sc * bc), np.float32)
            padded[:r, :c] = np.abs(v)
            amax = padded.reshape(sr, br, sc, bc).max(axis=(1, 3)) if v.size else np.zeros((sr, sc), np.float32)
            target = np.float32(FLOAT8_MAX[as_dtype(dtype)] / 2.0 ** margin)
            s = np.where(amax > 0, amax / target, np.float32(1.0)).astype(np.float32)
        full = np.repeat(np.repeat(s, br, 0), bc, 1)[:r, :c]
        q = cast_reference((v / full).astype(np.float32), dtype=dtype, saturate=True)
        return np.asarray(q, np.float64) * full.astype(np.float64)

    x = np.asarray(x)
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    if np.asarray(weight).dtype in (dt.float8_e4m3fn.numpy, dt.float8_e5m2.numpy):
        br, bc = _block_shape(np.shape(weight), blocks["w"])
        w = np.asarray(weight, np.float64) * np.repeat(np.repeat(np.asarray(w_scale, np.float64), br, 0), bc, 1)[
            : np.shape(weight)[0], : np.shape(weight)[1]]
    else:
        w = quantize(weight, w_dtype, blocks["w"], w_scale)
    y = quantize(x2, x_dtype, blocks["x"], x_scale) @ w.T
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y.reshape(x.shape[:-1] + (w.shape[0],))


def _fp8_linear_vjp(g, out, x, weight, bias=None, x_scale=None, w_scale=None, g_scale=None, *,
                    granularity="tensor", x_dtype=dt.float8_e4m3fn, w_dtype=dt.float8_e4m3fn,
                    g_dtype=dt.float8_e5m2, block=DEFAULT_BLOCK, margin=0, observer=None):
    n, k = weight.shape
    g2 = cast(reshape(g, (-1, n)), dt.float32)                                  # (M, N)
    x2 = cast(reshape(x, (-1, k)), dt.float32)                                  # (M, K)
    blocks = gemm_blocks(granularity, block)
    if observer is not None:  # delayed scaling records the gradient's amax for the next step
        observer(block_amax(g2, (-1, -1)))
    w_hi = weight if weight.dtype not in dt.FLOAT8_DTYPES else \
        dequantize_fp8(weight, expand_scales(w_scale, blocks["w"], weight.shape))
    gx = gw = gb = None
    if x.requires_grad:  # dx (M, K) = g (M, N) @ w (N, K)
        gq, sg = quantize_blocks(g2, g_dtype, blocks["g_dx"], g_scale, margin)
        wq, sw = quantize_blocks(w_hi, w_dtype, blocks["w_dx"], w_scale if granularity == "tensor"
                                 and weight.dtype not in dt.FLOAT8_DTYPES else None, margin)
        gx = cast(reshape(fp8_gemm(gq, sg, blocks["g_dx"], wq, sw, blocks["w_dx"], granularity), x.shape), x.dtype)
    if weight.requires_grad and weight.dtype not in dt.FLOAT8_DTYPES:  # dw (N, K) = gᵀ (N, M) @ x (M, K)
        gq, sg = quantize_blocks(g2, g_dtype, blocks["g_dw"], g_scale, margin)
        xq, sx = quantize_blocks(x2, x_dtype, blocks["x_dw"], x_scale, margin)
        gw = cast(fp8_gemm(transpose(gq, 0, 1), transpose(sg, 0, 1), _t(blocks["g_dw"]), xq, sx,
                           blocks["x_dw"], granularity), weight.dtype)
    if bias is not None and bias.requires_grad:  # the bias gradient needs no GEMM: float32 sum
        gb = cast(_sum(g2, 0), bias.dtype)
    return gx, gw, gb, None, None, None


fp8_linear = Op(
    "fp8_linear", kind=COMPOSITE, inputs=("x", "weight", "bias", "x_scale", "w_scale", "g_scale"),
    optional=("bias", "x_scale", "w_scale", "g_scale"),
    attrs={"granularity": "tensor", "x_dtype": dt.float8_e4m3fn, "w_dtype": dt.float8_e4m3fn,
           "g_dtype": dt.float8_e5m2, "block": DEFAULT_BLOCK, "margin": 0, "observer": None},
    infer=_fp8_linear_infer, reference=fp8_linear_reference, decompose=_fp8_linear_decomposition,
    prepare=_prepare_fp8_linear, vjp=_fp8_linear_vjp, dtypes=(dt.float32, dt.bfloat16),
    accumulating=True, cases={"family": "fp8_linear"},
    doc="""y = x wᵀ + b with the GEMM in float8: x (..., K), weight (N, K), bias (N,).

    x is quantized to x_dtype and the weight to w_dtype (a weight already stored in float8 is
    used as it is, with its w_scale) in blocks set by `granularity`: "tensor" (one scale),
    "row" (per token / per output channel), "block" (1×`block` activation tiles, `block`² weight
    blocks; DeepSeek-V3). Products accumulate in float32 and the result is rounded to x's dtype.
    Tensor-wise scaling may take precomputed float32 (1, 1) scales (delayed scaling); otherwise
    scales come from the current amax. The VJP runs the input- and weight-gradient GEMMs in
    float8 too, the gradient in g_dtype (e5m2 by default), re-quantizing along each GEMM's
    non-contracted dims; the bias gradient is a float32 sum. `observer`, when set, is called
    in the backward pass with the gradient's amax (1, 1) (how delayed scaling sees it).""",
)
