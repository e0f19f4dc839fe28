"""Index bounds: the one value check the index kernels make themselves (docs/porting.md).

Shapes and dtypes are judged by the op's rule before a kernel runs; whether every index lies in
[0, size) can only be seen in the values, so each gather / index_copy / embedding kernel (and a
fused cross_entropy) checks it where the values live and raises through `check_bounds`. accel
ops never wrap a negative index (numpy would) and never clamp or drop a bad one (XLA would).
"""
from __future__ import annotations

import numpy as np

from accel.core.errors import IndexOutOfRangeError


def check_bounds(lo: int, hi: int, size: int, *, axis: int, what: str = "index",
                 hint: str | None = None) -> None:
    """Raise IndexOutOfRangeError unless lo >= 0 and hi < size (lo/hi: the smallest and largest index)."""
    if lo < 0 or hi >= size:
        bad = lo if lo < 0 else hi
        if hint is None:
            hint = ("negative indices do not count from the end in accel ops; add the axis length "
                    "first" if bad < 0 else "every index must be smaller than the axis length")
            hint += " (token ids must lie in [0, vocab_size))"
        raise IndexOutOfRangeError(f"{what} {bad} is out of range [0, {size}) along axis {axis}",
                                   hint=hint)


def check_host_indices(indices: np.ndarray, size: int, *, axis: int, what: str = "index") -> None:
    """`check_bounds` for indices held in a host (numpy) array."""
    count = indices.size
    if not count:
        return
    if count <= _FEW:  # a decode step's one or few ids: Python's min/max beat numpy's reductions
        values = indices.ravel().tolist()
        lo, hi = min(values), max(values)
    else:
        lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= size:
        check_bounds(lo, hi, size, axis=axis, what=what)


_FEW = 32


def check_host_targets(targets: np.ndarray, classes: int, ignore_index: int) -> None:
    """Every cross_entropy target is a class in [0, classes) or `ignore_index`."""
    kept = targets[targets != ignore_index]
    if kept.size:
        check_bounds(int(kept.min()), int(kept.max()), classes, axis=-1, what="target",
                     hint=TARGET_HINT)


TARGET_HINT = "a cross_entropy target is a class in [0, C) or equals ignore_index"
