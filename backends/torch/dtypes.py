"""torch dtypes for accel's, float8's rounding rule, and the cast kernel (bit-exact against
ml_dtypes, the reference).

float16/bfloat16 run natively: torch's CPU and CUDA kernels compute them in float32 internally
and round once, as the reference does. float8 has storage, casts and data movement in torch but
almost no arithmetic kernels, so arithmetic on float8 goes through float32 and rounds once
(`F8_VIA_F32`, used by the kernels of torch_primitives.py and torch_fused.py).
"""
from __future__ import annotations

import numpy as np
import torch

from accel.core import dtypes as dt
from accel.backends._shared_kernels import LowPrecision

TORCH_DTYPES = {
    dt.float64: torch.float64, dt.float32: torch.float32, dt.float16: torch.float16,
    dt.bfloat16: torch.bfloat16, dt.float8_e4m3fn: torch.float8_e4m3fn,
    dt.float8_e5m2: torch.float8_e5m2, dt.int8: torch.int8, dt.int32: torch.int32,
    dt.int64: torch.int64, dt.bool_: torch.bool,
}
ACCEL_DTYPES = {v: k for k, v in TORCH_DTYPES.items()}

F8 = frozenset((torch.float8_e4m3fn, torch.float8_e5m2))
LOW = frozenset((torch.float16, torch.bfloat16)) | F8
F32 = torch.float32
E4M3FN = torch.float8_e4m3fn
_FLOAT8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


def rounded(y, dtype):
    """y (a float32/float64 result) rounded to `dtype` with the format's overflow rule.

    torch saturates to ±448 when converting to float8_e4m3fn; the format (and ml_dtypes, the
    reference) has no infinity, so out-of-range values and ±inf become NaN. 464 is the midpoint
    to the next (absent) binade step and rounds to even (448). float64 is judged after its
    rounding to float32, as ml_dtypes converts through float32."""
    out = y.to(dtype)
    if dtype != E4M3FN:
        return out
    src = y.to(F32) if y.dtype == torch.float64 else y
    return torch.where(src.abs() > 464.0, torch.full((), float("nan"), dtype=dtype, device=y.device), out)


def up(x):
    """x in float32 when it is low precision (float16/bfloat16/float8), else x itself."""
    return x.to(F32) if x.dtype in LOW else x


# float8 arithmetic: computed in float32, rounded once with float8's overflow rule.
F8_VIA_F32 = LowPrecision(F8, widen=lambda a: a.to(F32), round_to=rounded)


def exact_value(value, dtype):
    """`value` rounded to `dtype` the way numpy/ml_dtypes round it, as a Python number."""
    v = np.full((), value, dtype=dtype.numpy)[()]  # numpy's own conversion, errors included
    if dtype.is_floating:
        return float(v)
    return bool(v) if dtype is dt.bool_ else int(v)


def _f64_to_f32_round_to_odd(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounding to odd, so a second rounding (to float16) is exact RNE.

    torch converts double -> half through float, which double-rounds; numpy rounds once. Round
    to odd keeps the sticky information in the last float32 bit, which is enough because
    float32 carries more than two bits beyond float16's mantissa.
    """
    f = x.to(F32)
    back = f.to(torch.float64)
    inexact = (back != x) & torch.isfinite(f)
    even = (f.view(torch.int32) & 1) == 0
    toward = torch.where(x > back, torch.full_like(f, float("inf")), torch.full_like(f, float("-inf")))
    return torch.where(inexact & even, torch.nextafter(f, toward), f)


def cast(x, *, dtype, saturate=False):
    return cast_to(x, TORCH_DTYPES[dtype], saturate)


def cast_to(x, target: torch.dtype, saturate: bool = False):
    """`cast` to a torch dtype (what compiled graphs call: no accel dtype object to look up)."""
    if not x.is_floating_point():
        if x.dtype == target:
            return x.clone()
        if target == E4M3FN and x.dtype in (torch.int32, torch.int64):  # past 464: NaN, as floats
            return torch.where(x.abs() > 464, torch.full((), float("nan"), dtype=target, device=x.device),
                               x.to(target))
        return x.to(target)
    if saturate and target in _FLOAT8_MAX:
        top = _FLOAT8_MAX[target]
        if x.dtype in F8:
            x = x.to(F32)
        x = torch.where(torch.isnan(x), x, x.clamp(-top, top))
    if x.dtype == target:
        return x.clone()  # numpy's astype copies; a later in-place update must not alias
    if not target.is_floating_point:
        if x.dtype in F8:
            x = x.to(F32)
        return torch.trunc(x).to(target)  # float -> int/bool truncates toward zero, as numpy
    if x.dtype == torch.float64 and target == torch.float16:
        x = _f64_to_f32_round_to_odd(x)
    elif x.dtype in LOW and target in LOW:
        x = x.to(F32)  # exact; not every low -> low pair has a direct conversion
    if x.dtype in F8:
        x = x.to(F32)  # exact; the overflow rule below reads the value
    return rounded(x, target)
