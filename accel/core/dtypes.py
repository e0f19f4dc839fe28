"""accel's dtypes and the one place where type promotion is written down.

Each dtype carries its numpy storage type (ml_dtypes for bfloat16 and float8), so the reference
backend and host transfers have one exact representation of every value.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from accel.core.errors import DTypeError


@dataclass(frozen=True, eq=False)
class DType:
    """A tensor element type. Compared by identity: there is one object per dtype."""

    name: str
    kind: str  # "f" floating, "i" signed integer, "b" bool
    bits: int
    numpy: np.dtype

    @property
    def is_floating(self) -> bool:
        return self.kind == "f"

    @property
    def is_integer(self) -> bool:
        return self.kind == "i"

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    def __repr__(self) -> str:
        return f"accel.{self.name}"

    def __reduce__(self):  # keep identity across copy/pickle of specs
        return (as_dtype, (self.name,))


float64 = DType("float64", "f", 64, np.dtype(np.float64))
float32 = DType("float32", "f", 32, np.dtype(np.float32))
float16 = DType("float16", "f", 16, np.dtype(np.float16))
bfloat16 = DType("bfloat16", "f", 16, np.dtype(ml_dtypes.bfloat16))
float8_e4m3fn = DType("float8_e4m3fn", "f", 8, np.dtype(ml_dtypes.float8_e4m3fn))
float8_e5m2 = DType("float8_e5m2", "f", 8, np.dtype(ml_dtypes.float8_e5m2))
int8 = DType("int8", "i", 8, np.dtype(np.int8))
int32 = DType("int32", "i", 32, np.dtype(np.int32))
int64 = DType("int64", "i", 64, np.dtype(np.int64))
bool_ = DType("bool", "b", 8, np.dtype(np.bool_))

ALL_DTYPES: tuple[DType, ...] = (
    float64, float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, int8, int32, int64, bool_,
)
FLOAT_DTYPES = tuple(d for d in ALL_DTYPES if d.is_floating)
LOW_PRECISION = (float16, bfloat16, float8_e4m3fn, float8_e5m2)
FLOAT8_DTYPES = (float8_e4m3fn, float8_e5m2)
INT_DTYPES = (int8, int32, int64)

_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update({"bool_": bool_, "bf16": bfloat16, "fp16": float16, "half": float16,
                 "fp32": float32, "float": float32, "fp64": float64, "double": float64,
                 "e4m3": float8_e4m3fn, "e5m2": float8_e5m2})
_BY_NUMPY = {d.numpy: d for d in ALL_DTYPES}


def as_dtype(value) -> DType:
    """Accept a DType, its name ("bfloat16", "bf16"), or a numpy/ml_dtypes dtype."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        found = _BY_NAME.get(value)
        if found is not None:
            return found
    else:
        try:
            found = _BY_NUMPY.get(np.dtype(value))
        except TypeError:
            found = None
        if found is not None:
            return found
    raise DTypeError(
        f"unknown dtype {value!r}",
        hint=f"use one of: {', '.join(d.name for d in ALL_DTYPES)}",
    )


def from_numpy_dtype(np_dtype: np.dtype) -> DType:
    found = _BY_NUMPY.get(np_dtype)
    if found is None:
        raise DTypeError(
            f"numpy dtype {np_dtype} has no accel counterpart",
            hint=f"cast the array to one of: {', '.join(d.name for d in ALL_DTYPES)}",
        )
    return found


# Promotion: bool < integers < floats. Within a kind the wider type wins. float16 with
# bfloat16 (neither holds the other) meets at float32, and the two float8 formats meet at
# bfloat16, as in JAX's lattice. Written once; the dispatcher applies it for every backend.
_FLOAT_RANK = {float8_e4m3fn: 0, float8_e5m2: 0, float16: 1, bfloat16: 1, float32: 2, float64: 3}
_INT_RANK = {int8: 0, int32: 1, int64: 2}


def promote(a: DType, b: DType) -> DType:
    if a is b:
        return a
    if a.kind != b.kind:
        order = {"b": 0, "i": 1, "f": 2}
        return a if order[a.kind] > order[b.kind] else b
    if a.kind == "i":
        return a if _INT_RANK[a] > _INT_RANK[b] else b
    ra, rb = _FLOAT_RANK[a], _FLOAT_RANK[b]
    if ra != rb:
        return a if ra > rb else b
    return bfloat16 if ra == 0 else float32


def result_type_with_scalar(tensor_dtype: DType, scalar) -> DType:
    """Python scalars are weak: they take the tensor's dtype unless their kind is wider.

    An int tensor with a float scalar becomes float32 (not float64), a bool tensor with an
    int scalar becomes int64, so every backend agrees whatever its own scalar rules are.
    """
    if isinstance(scalar, bool) or tensor_dtype.kind == "f":
        return tensor_dtype
    if isinstance(scalar, int):
        return int64 if tensor_dtype.kind == "b" else tensor_dtype
    return float32
