"""scaled_matmul on torch: float8 GEMMs with per-tensor or row/column scales.

On CUDA devices of compute capability 8.9+ `torch._scaled_mm` runs where its layout and dtype
rules allow; everywhere else an exact emulation: float8 products are exact in float32, the GEMM
accumulates in float32, the scales multiply the result, one rounding (see docs/torch.md).
"""
from __future__ import annotations

import torch

from accel.core import dtypes as dt
from accel.backends.torch.dtypes import F32, TORCH_DTYPES


def scaled_matmul_emulated(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    """What torch._scaled_mm computes, in float32: exact float8 products, float32 accumulation,
    then the scales, then one rounding to out_dtype."""
    out = torch.matmul(a.to(F32), b.to(F32))
    out = out * scale_a.to(F32) * scale_b.to(F32)
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
    sa = scale_a.to(F32).reshape(()) if per_tensor else scale_a.to(F32).contiguous()
    sb = scale_b.to(F32).reshape(()) if per_tensor else scale_b.to(F32).contiguous()
    b_col_major = b.t().contiguous().t()  # _scaled_mm wants the right operand column-major
    try:
        return torch._scaled_mm(a.contiguous(), b_col_major, scale_a=sa, scale_b=sb, out_dtype=target)
    except RuntimeError as exc:  # a layout/dtype rule of this torch/cuBLASLt version we missed
        from accel.core.dispatch import stats

        stats.warn_once(("torch", "scaled_matmul", "_scaled_mm"),
                        f"accel: torch._scaled_mm refused {list(a.shape)}@{list(b.shape)} "
                        f"({a.dtype}, {b.dtype} -> {target}): {exc}; using the float32 emulation")
        return scaled_matmul_emulated(a, b, scale_a, scale_b, out_dtype=out_dtype)
