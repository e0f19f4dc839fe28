"""The torch backend's kernel table: every accel primitive and the composites torch fuses.

The kernels live in sibling modules, one job each: `torch_dtypes` (dtype maps, float8 rounding,
cast), `torch_primitives` (primitives), `torch_fused` (fused composites), `torch_float8`
(scaled_matmul). Kernels that need the device (creation ops, scaled_matmul) are bound per backend
instance by `kernels_for(device)`.
"""
from __future__ import annotations

from typing import Callable

import torch

from accel import ops
from accel.backends.torch import fused as torch_fused
from accel.backends.torch import primitives as torch_primitives
from accel.backends.torch.dtypes import ACCEL_DTYPES, TORCH_DTYPES, exact_value  # noqa: F401 (the backend's names)
from accel.backends.torch.float8 import scaled_matmul_emulated
from accel.backends.torch.primitives import INPLACE_KERNELS  # noqa: F401

KERNELS = {**torch_primitives.PRIMITIVE_KERNELS, **torch_fused.FUSED_KERNELS}

# Ops whose float8 inputs are computed in float32 and rounded once (torch has no float8 kernel
# for them); data movement, casts, where/gather/concat run on float8 storage directly.
EMULATED_FLOAT8 = tuple(sorted(
    op.name for op in KERNELS if op not in torch_primitives.FLOAT8_NATIVE | torch_fused.FLOAT8_NATIVE
    and any(d.name.startswith("float8") for d in op.dtypes)))  # ops that take float8 at all


def kernels_for(device: torch.device, *, scaled_matmul: Callable = scaled_matmul_emulated) -> dict:
    """The kernel table for one device: creation ops bind the device; `scaled_matmul` is the
    backend's choice for ops.scaled_matmul (the emulation, or a float8.ScaledMM that
    calls torch._scaled_mm: see TorchBackend.configure)."""
    table = {**KERNELS, **torch_primitives.creation_kernels(device)}
    scaled = getattr(ops, "scaled_matmul", None)
    if scaled is not None:
        table[scaled] = scaled_matmul
    return table
