"""TensorSpec: the shape and dtype of a tensor without its data (for rules and graph tracing)."""
from __future__ import annotations

from dataclasses import dataclass

from accel.core.dtypes import DType


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


def describe(value) -> str:
    """Short text for an argument in an error message: `float32[2, 3]`, a scalar, or a list."""
    if value is None:
        return "None"
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value.dtype, "name"):
        return f"{value.dtype.name}{list(value.shape)}"
    if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    return repr(value)
