"""scaled_matmul on torch: float8 GEMMs with per-tensor or row/column scales.

Two kernels; each backend instance picks one (its `scaled_mm` mode, docs/torch.md):

- `scaled_matmul_emulated`: exact float8 products in float32, a float32 GEMM, the scales on the
  float32 result, one rounding. The default everywhere but CUDA ≥ 8.9.
- `ScaledMM`: `torch._scaled_mm` wherever torch's CUDA rules allow it (`refusal` below), else
  the emulation, each such call counted and warned once per cause. The default on CUDA ≥ 8.9;
  on any other device an explicit opt-in. torch implements `_scaled_mm` on the CPU as well, with
  looser rules, so the CUDA rules are checked on every device: a CPU run takes the branches an
  H100 takes and exercises the real call convention, only not the speed.
"""
from __future__ import annotations

import torch

from accel.core import dtypes as dt
from accel.backends.torch.dtypes import F32, TORCH_DTYPES

# auto: torch._scaled_mm on CUDA ≥ 8.9 (float8 tensor cores), the emulation elsewhere;
# native: torch._scaled_mm on any device; emulate: the emulation everywhere.
SCALED_MM_MODES = ("auto", "native", "emulate")
SCALED_MM_ENV = "ACCEL_TORCH_SCALED_MM"
E4M3FN, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2


def scaled_matmul_emulated(a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
    """What torch._scaled_mm computes, in float32: exact float8 products, float32 accumulation,
    then the scales, then one rounding to out_dtype."""
    out = torch.matmul(a.to(F32), b.to(F32))
    out = out * scale_a.to(F32) * scale_b.to(F32)
    return out.to(TORCH_DTYPES[out_dtype])


def scale_kind(scale_a, scale_b) -> str:
    """`tensor` when both scales are one number, else `row` (per row of a and/or per column of
    b; a per-tensor scale beside a vector is broadcast into one: _scaled_mm pairs like kinds)."""
    return "tensor" if scale_a.numel() == 1 and scale_b.numel() == 1 else "row"


def refusal(a, b, kind: str, *, rowwise_needs_e4m3_b: bool) -> tuple[str, str] | None:
    """(cause, why) when torch's CUDA `_scaled_mm` would refuse this call, else None.

    The rules of `_scaled_mm_out_cuda` (aten/src/ATen/native/cuda/ScaledBlas.cpp of the torch
    releases that have `_scaled_mm_v2`, 2.13 among them) that depend on the inputs: K and N
    multiples of 16 (cuBLASLt's alignment), not both operands e5m2. Row-wise scales take a
    bfloat16, float16 or float32 output on every path (older torch: bfloat16 only); where torch
    runs them through its CUTLASS kernel (`cutlass_rowwise`) the right operand must be e4m3fn.
    Layouts are the caller's part (call_scaled_mm)."""
    k, n = b.shape
    if k % 16 or n % 16:
        return "shape", f"K={k} and N={n} must both be multiples of 16"
    if a.dtype == E5M2 and b.dtype == E5M2:
        return "e5m2", "cuBLASLt has no e5m2 x e5m2 GEMM"
    if kind == "row" and rowwise_needs_e4m3_b and b.dtype != E4M3FN:
        return "rowwise-b", "torch's CUTLASS row-wise kernel (this GPU) takes an e4m3fn b only"
    return None


def cutlass_rowwise(capability: tuple[int, int], cuda_version: str | None) -> bool:
    """Whether torch runs row-wise scales through its CUTLASS kernel rather than cuBLASLt: all
    but compute capability 9.x with cuBLAS 12.9+ (ScaledBlas.cpp, `_scaled_rowwise_rowwise`)."""
    cuda = tuple(int(p) for p in (cuda_version or "0.0").split(".")[:2])
    return not (capability[0] == 9 and cuda >= (12, 9))


def call_scaled_mm(a, b, scale_a, scale_b, kind: str, target: torch.dtype):
    """torch._scaled_mm in its calling convention: a row-major, b column-major; float32 scales
    0-d (per tensor) or (M, 1) and (1, N), contiguous (per row / per column)."""
    m, n = a.shape[0], b.shape[1]
    if kind == "tensor":
        sa, sb = scale_a.reshape(()), scale_b.reshape(())
    else:  # fresh (M, 1) / (1, N) strides: the transposed scales of a backward GEMM have
        # strides (1, N) that `contiguous()` leaves alone (size-1 dim) and torch's CPU check refuses
        sa = scale_a.reshape(-1).expand(m).contiguous().view(m, 1)
        sb = scale_b.reshape(-1).expand(n).contiguous().view(1, n)
    # b.t() of a column-major b (fp8_linear's transposed weight) is contiguous: no copy then
    return torch._scaled_mm(a.contiguous(), b.t().contiguous().t(), scale_a=sa, scale_b=sb, out_dtype=target)


class ScaledMM:
    """The scaled_matmul kernel of a backend in a mode that chose torch._scaled_mm.

    Calls `_scaled_mm` where `refusal` finds nothing, else the exact emulation. Every emulated
    call is counted (`emulated_calls`, and as `decomposed` in accel.dispatch_stats()) and warns
    once per cause. A refusal the rules did not foresee (this GPU's cuBLASLt, a ROCm build) is
    remembered per (a dtype, b dtype, out dtype, scale kind), so that combination goes straight
    to the emulation afterwards instead of failing inside torch on every call."""

    def __init__(self, spec: str, *, rowwise_needs_e4m3_b: bool = False):
        self.spec = spec
        self.rowwise_needs_e4m3_b = rowwise_needs_e4m3_b
        self.native_calls = 0
        self.emulated_calls = 0
        self.refused: dict[tuple, str] = {}  # (a dtype, b dtype, out dtype, scale kind) -> torch's message

    def __call__(self, a, b, scale_a, scale_b, *, out_dtype=dt.bfloat16):
        target = TORCH_DTYPES[out_dtype]
        kind = scale_kind(scale_a, scale_b)
        key = (a.dtype, b.dtype, target, kind)
        why = refusal(a, b, kind, rowwise_needs_e4m3_b=self.rowwise_needs_e4m3_b)
        if why is None and key in self.refused:
            why = ("refused", self.refused[key])
        if why is None:
            try:
                out = call_scaled_mm(a, b, scale_a, scale_b, kind, target)
            except torch.OutOfMemoryError:  # not a rule: the emulation would need more memory still
                raise
            except (RuntimeError, ValueError) as exc:  # TORCH_CHECK / TORCH_CHECK_VALUE
                self.refused[key] = f"torch._scaled_mm refused it: {str(exc).splitlines()[0]}"
                why = ("refused", self.refused[key])
            else:
                self.native_calls += 1
                return out
        self._count_emulated(a, b, kind, target, why)
        return scaled_matmul_emulated(a, b, scale_a, scale_b, out_dtype=out_dtype)

    def _count_emulated(self, a, b, kind, target, why) -> None:
        from accel.core.dispatch import stats

        cause, reason = why
        self.emulated_calls += 1
        stats.add(self.spec, "scaled_matmul", "decomposed")
        dtypes = f"{str(a.dtype).removeprefix('torch.')} x {str(b.dtype).removeprefix('torch.')}"
        key = (self.spec, "scaled_matmul", "_scaled_mm", cause) + ((dtypes, target, kind) if cause == "refused" else ())
        stats.warn_once(key, f"accel: scaled_matmul on {self.spec}: {list(a.shape)}@{list(b.shape)} "
                             f"({dtypes} -> {str(target).removeprefix('torch.')}, {kind}-wise scales) "
                             f"runs the float32 emulation, not torch._scaled_mm: {reason}")

    def counters(self) -> dict[str, int]:
        return {"scaled_mm_native": self.native_calls, "scaled_mm_emulated": self.emulated_calls}
