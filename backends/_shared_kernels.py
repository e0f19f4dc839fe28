"""Kernel pieces that are the same logic in every array-library backend (numpy, jax, torch).

The low-precision rule is written once here: an input whose dtype the library cannot (or, by
docs/conformance.md, must not) compute in directly is widened, computed, and rounded once to its own
dtype. Each backend passes what differs: which dtypes are "low", how to widen an array and how
to round a result back (torch's float8 rounding has its own overflow rule). On the fast path,
an input that is not low precision, the wrapper costs one dtype test.

What only looks alike stays in each backend: the kernel tables (one row per op naming the
library's own function; a shared factory would hide which function a backend runs), creation,
casts and reductions (each library's rounding and dtype quirks differ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection

import numpy as np

from accel.core.bounds import check_host_indices


@dataclass(frozen=True)
class LowPrecision:
    """How one backend computes low-precision inputs: `low` the dtypes to widen, `widen(a)` an
    array in the wide dtype, `round_to(y, dtype)` the result rounded once to the input dtype."""

    low: Collection
    widen: Callable
    round_to: Callable

    def unary(self, fn: Callable) -> Callable:
        """fn(x), computed as round_to(fn(widen(x)), x.dtype) when x.dtype is low."""
        low, widen, round_to = self.low, self.widen, self.round_to

        def kernel(x):
            if x.dtype in low:
                return round_to(fn(widen(x)), x.dtype)
            return fn(x)
        return _named(kernel, fn)

    def binary(self, fn: Callable) -> Callable:
        """fn(x, y), computed wide and rounded once to x's dtype when x.dtype is low (the
        dispatcher has already given y the same dtype)."""
        low, widen, round_to = self.low, self.widen, self.round_to

        def kernel(x, y):
            if x.dtype in low:
                return round_to(fn(widen(x), widen(y)), x.dtype)
            return fn(x, y)
        return _named(kernel, fn)

    def compare(self, fn: Callable) -> Callable:
        """A comparison: low-precision inputs are compared widened (exact); the result is bool."""
        low, widen = self.low, self.widen

        def kernel(x, y):
            if x.dtype in low:
                return fn(widen(x), widen(y))
            return fn(x, y)
        return _named(kernel, fn)


def _named(kernel: Callable, fn: Callable) -> Callable:
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


def basic_slice(x, *, axes, starts, stops, steps=None):
    """x[start:stop:step] along `axes` by basic indexing (a view where the library has views).

    The op's `prepare` has already clamped starts/stops and made steps positive."""
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, stops, steps or (1,) * len(axes)):
        index[a] = slice(s, e, st)
    return x[tuple(index)]


def host_bounds_checked(kernel: Callable) -> Callable:
    """An index kernel (x, index, ...; attr axis, default 0) over host arrays whose indices are
    checked to lie in [0, x.shape[axis]) first (accel.core.bounds), for a library that would wrap
    negatives or clamp (ONNX Gather / ScatterElements)."""
    def checked(x, index, *rest, **attrs):
        axis = attrs.get("axis", 0)
        check_host_indices(np.asarray(index), np.shape(x)[axis], axis=axis)
        return kernel(x, index, *rest, **attrs)
    return _named(checked, kernel)
