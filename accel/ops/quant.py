"""Quantized compute: `scaled_matmul`, the float8 GEMM of scaled-float8 training and inference
recipes (torch._scaled_mm, cuBLASLt FP8, Transformer Engine)."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import as_dtype
from accel.core.errors import DTypeError, ShapeError
from accel.core.op import COMPOSITE, Op
from accel.ops._rules import spec
from accel.ops.elementwise import cast, mul
from accel.ops.linalg import matmul

OUT_DTYPES = (dt.bfloat16, dt.float32)


def _scaled_matmul_infer(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    out_dtype = as_dtype(out_dtype)
    for name, x in (("a", a), ("b", b)):
        if x.dtype not in dt.FLOAT8_DTYPES:
            raise DTypeError(f"{name} must be float8_e4m3fn or float8_e5m2, got {x.dtype.name}",
                             hint=f"quantize {name} first: accel.ops.cast({name} / scale, "
                                  f"accel.float8_e4m3fn, saturate=True)")
        if x.ndim != 2:
            raise ShapeError(f"{name} must be 2-d, got shape {list(x.shape)}",
                             hint="flatten the leading dims into rows first")
    for name, s in (("scale_a", scale_a), ("scale_b", scale_b)):
        if s.dtype is not dt.float32:
            raise DTypeError(f"{name} must be float32, got {s.dtype.name}",
                             hint=f"cast {name} to float32")
    if out_dtype not in OUT_DTYPES:
        raise DTypeError(f"out_dtype must be bfloat16 or float32, got {out_dtype.name}",
                         hint="pick out_dtype=accel.bfloat16 or accel.float32")
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ShapeError(f"contracting dimensions differ: a {list(a.shape)} @ b {list(b.shape)}",
                         hint="a is (M, K) and b is (K, N)")
    if tuple(scale_a.shape) not in ((), (1,), (1, 1), (m, 1)):
        raise ShapeError(f"scale_a shape {list(scale_a.shape)} is neither per-tensor nor per-row "
                         f"of a {list(a.shape)}", hint=f"use shape () or ({m}, 1)")
    if tuple(scale_b.shape) not in ((), (1,), (1, 1), (1, n)):
        raise ShapeError(f"scale_b shape {list(scale_b.shape)} is neither per-tensor nor per-column "
                         f"of b {list(b.shape)}", hint=f"use shape () or (1, {n})")
    return spec((m, n), out_dtype)


def _prepare_scaled_matmul(args, attrs):
    # Validate eagerly: a wrong scale shape would otherwise broadcast into a silent wrong answer.
    attrs = {"out_dtype": as_dtype(attrs["out_dtype"])}
    _scaled_matmul_infer(*args, **attrs)
    return args, attrs


def scaled_matmul_reference(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    a, b, sa, sb = (np.asarray(x, np.float64) for x in (a, b, scale_a, scale_b))
    if sa.ndim == 1:
        sa = sa.reshape(1, 1)
    if sb.ndim == 1:
        sb = sb.reshape(1, 1)
    return (a * sa) @ (b * sb)


def _scaled_matmul_decomposition(a, b, scale_a, scale_b, out_dtype=dt.bfloat16):
    if scale_a.ndim == 1:
        scale_a = scale_a.reshape((1, 1))
    if scale_b.ndim == 1:
        scale_b = scale_b.reshape((1, 1))
    # float8 products are exact in float32 and the GEMM accumulates in float32 (as the
    # hardware does); the scales apply to the float32 result, then one rounding.
    out = matmul(cast(a, dt.float32), cast(b, dt.float32))
    return cast(mul(mul(out, scale_a), scale_b), out_dtype)


scaled_matmul = Op(
    "scaled_matmul", kind=COMPOSITE, inputs=("a", "b", "scale_a", "scale_b"),
    attrs={"out_dtype": dt.bfloat16}, infer=_scaled_matmul_infer,
    reference=scaled_matmul_reference, decompose=_scaled_matmul_decomposition,
    prepare=_prepare_scaled_matmul, dtypes=dt.FLOAT8_DTYPES, accumulating=True,
    cases={"family": "scaled_matmul", "out_dtypes": ("bfloat16", "float32"),
           "scales": ("tensor", "row")},
    doc="""(a * scale_a) @ (b * scale_b) for float8 a (M, K) and b (K, N), rounded to out_dtype.

    a and b are float8_e4m3fn or float8_e5m2; scale_a is float32 per-tensor (shape () or (1,))
    or per-row (M, 1); scale_b per-tensor or per-column (1, N). Products accumulate in float32;
    out_dtype is bfloat16 (default) or float32. Runs on torch._scaled_mm where the hardware has
    float8 GEMMs (CUDA compute capability 8.9+) and by exact float32 emulation elsewhere.""",
)
