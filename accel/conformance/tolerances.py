"""Every tolerance the conformance suite uses, in one place (the tables of docs/conformance.md).

Change a number only with a measured reason written beside it. Per-op exceptions are entries of
`OVERRIDES`, keyed `(op, dtype, backend)` (`"*"` matches any), each with its justification.
"""
from __future__ import annotations

from dataclasses import dataclass

# Elementwise ops: every finite element must satisfy |a - r| <= atol + rtol * |r|.
# Sources: torch.testing.assert_close defaults; float8 rows are one ulp at the format's epsilon.
ELEMENTWISE: dict[str, tuple[float, float]] = {  # dtype -> (rtol, atol)
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float8_e4m3fn": (0.125, 2.0 ** -9),
    "float8_e5m2": (0.25, 2.0 ** -16),
    "int8": (0.0, 0.0),
    "int32": (0.0, 0.0),
    "int64": (0.0, 0.0),
    "bool": (0.0, 0.0),
}

# Accumulating ops (matmul, reductions, softmax, norms, attention, cross-entropy): both
# NMSE = sum((a-r)^2)/sum(r^2) and scaled max = max|a-r|/rms(r) must be under these.
# Calibration (docs/conformance.md): a correct fp16 matmul at K=4096 gives NMSE ~4e-8, a bf16 one
# ~3e-6; the same matmuls accumulating in fp16/bf16 give 1.4e-4 and 4.6e-3.
ACCUMULATING: dict[str, tuple[float, float]] = {  # dtype -> (nmse, scaled_max)
    # float64 is not in docs/conformance.md's table: a float64 kernel differs from the float64
    # reference only by summation order, ~1e-16 relative per element; 1e-20 / 1e-8 leave room.
    "float64": (1e-20, 1e-8),
    "float32": (1e-10, 1e-5),
    "float16": (1e-6, 8e-3),
    "bfloat16": (5e-5, 6e-2),
    "float8_e4m3fn": (3e-3, 0.5),
    "float8_e5m2": (1e-2, 1.0),
}


@dataclass(frozen=True)
class Tolerance:
    """How one output is judged: 'exact', 'elementwise' (rtol, atol) or 'accumulating'."""

    kind: str
    rtol: float = 0.0
    atol: float = 0.0
    nmse: float = 0.0
    scaled_max: float = 0.0
    source: str = "docs/conformance.md"

    def as_dict(self) -> dict:
        if self.kind == "exact":
            return {"kind": "exact"}
        if self.kind == "elementwise":
            return {"kind": "elementwise", "rtol": self.rtol, "atol": self.atol}
        return {"kind": "accumulating", "nmse": self.nmse, "scaled_max": self.scaled_max}


@dataclass(frozen=True)
class Override:
    """A per-op exception to the tables: where it applies, the tolerance, and why."""

    op: str
    dtype: str
    backend: str
    tolerance: Tolerance
    justification: str


# (op, dtype, backend) -> tolerance. Each entry says why the default is wrong for it.
OVERRIDES: tuple[Override, ...] = (
)


def _override(op: str, dtype: str, backend: str, overrides) -> Tolerance | None:
    for entry in overrides:
        if entry.op == op and entry.dtype in (dtype, "*") and entry.backend in (backend, "*"):
            return entry.tolerance
    return None


def tolerance_for(op, dtype: str, backend: str = "*", overrides=None) -> Tolerance:
    """The tolerance for `op`'s output of dtype `dtype` on `backend` (name without device)."""
    found = _override(op.name, dtype, backend, OVERRIDES if overrides is None else overrides)
    if found is not None:
        return found
    if op.exact or dtype in ("int8", "int32", "int64", "bool"):
        return Tolerance("exact")
    if op.accumulating and dtype in ACCUMULATING:
        nmse, scaled = ACCUMULATING[dtype]
        return Tolerance("accumulating", nmse=nmse, scaled_max=scaled)
    rtol, atol = ELEMENTWISE[dtype]
    return Tolerance("elementwise", rtol=rtol, atol=atol)


def layout_tolerance(tol: Tolerance) -> Tolerance:
    """How a transposed or strided input's result is compared with the contiguous one.

    Bit-exact, as docs/conformance.md asks, except for accumulating ops: a BLAS reads a transposed
    operand with a different kernel and summation order (measured: numpy/OpenBLAS float32
    (13, 64) @ (64, 17) with a transposed operand differs in the last bit on 12 of 221 outputs),
    so those keep their accumulating tolerance, now against the contiguous result.
    """
    return tol if tol.kind == "accumulating" else Tolerance("exact")
