"""The torch backend's kernel table: every accel primitive and the composites torch fuses.

The kernels live in sibling modules, one job each: `torch_dtypes` (dtype maps, float8 rounding,
cast), `torch_primitives` (primitives), `torch_fused` (fused composites), `torch_float8`
(scaled_matmul). Kernels that need the device (creation ops, scaled_matmul) are bound per backend
instance by `kernels_for(device)`.
"""
from __future__ import annotations

import torch

from accel import ops
from accel.backends.torch import fused as torch_fused
from accel.backends.torch import primitives as torch_primitives
from accel.backends.torch.dtypes import ACCEL_DTYPES, TORCH_DTYPES, exact_value  # noqa: F401 (the backend's names)
from accel.backends.torch.float8 import scaled_matmul_cuda, scaled_matmul_emulated
from accel.backends.torch.primitives import INPLACE_KERNELS  # noqa: F401

KERNELS = {**torch_primitives.PRIMITIVE_KERNELS, **torch_fused.FUSED_KERNELS}

# Ops whose float8 inputs are computed in float32 and rounded once (torch has no float8 kernel
# for them); data movement, casts, where/gather/concat run on float8 storage directly.
EMULATED_FLOAT8 = tuple(sorted(
    op.name for op in KERNELS if op not in torch_primitives.FLOAT8_NATIVE | torch_fused.FLOAT8_NATIVE
    and any(d.name.startswith("float8") for d in op.dtypes)))  # ops that take float8 at all


def kernels_for(device: torch.device, *, native_scaled_mm: bool) -> dict:
    """The kernel table for one device: creation ops bind the device, scaled_matmul picks
    torch._scaled_mm where the hardware has float8 GEMMs."""
    table = {**KERNELS, **torch_primitives.creation_kernels(device)}
    scaled = getattr(ops, "scaled_matmul", None)
    if scaled is not None:
        table[scaled] = scaled_matmul_cuda if native_scaled_mm else scaled_matmul_emulated
    return table
