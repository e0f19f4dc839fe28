"""Conformance cases, generated from the op declarations.

Each op names a case family in `op.cases` (`{"family": "unary", "domain": (lo, hi), ...}`).
A family yields `Spec`s — a label (shape, attributes, value kind) and a builder — and this module
turns them into `Case`s: the seed is a stable hash of the case id (`op[dtype] label`), inputs are
drawn in float64, rounded to the dtype under test (ml_dtypes for bfloat16/float8), and those same
rounded arrays go to the backend and (upcast to float64) to the reference.

Families live in `families_basic.py` (elementwise, creation, movement, indexing, reductions) and
`families_nn.py` (matmul and the transformer composites). docs/conformance.md "Cases per op" lists
what they cover: scalar, size-1, empty, prime, 2^n+17 and 1025-sized dims, powers of two up to
4096 on reduced dims, broadcasting pairs; transposed and strided layouts; N(0,1), small, large,
subnormal, -0.0 and injected NaN/±inf values.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import ml_dtypes
import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import DType
from accel.core.op import Op

LAYOUTS = ("transposed", "strided")


@dataclass(frozen=True)
class Spec:
    """One case before its values exist: a label and how to build inputs from an rng.

    `build(rng) -> (inputs, attrs)`; `quick=False` keeps it out of the CI subset (big sizes);
    `layouts=True` also runs it with transposed and strided inputs.
    """

    label: str
    build: Callable[[np.random.Generator], tuple[tuple, dict]]
    quick: bool = True
    layouts: bool = False


@dataclass(frozen=True, eq=False)
class Case:
    op: Op
    dtype: DType            # the dtype under test (first input's, or the created tensor's)
    label: str
    inputs: tuple           # numpy arrays (a list of them for concat), None for omitted inputs
    attrs: dict = field(default_factory=dict)
    seed: int = 0
    layout: str = "contiguous"
    quick: bool = True

    @property
    def base_id(self) -> str:
        return f"{self.op.name}[{self.dtype.name}] {self.label}"

    @property
    def id(self) -> str:
        return self.base_id if self.layout == "contiguous" else f"{self.base_id} layout={self.layout}"


def stable_seed(case_id: str) -> int:
    """A 32-bit seed from the case id: the same on every machine and Python version."""
    return int.from_bytes(hashlib.blake2b(case_id.encode(), digest_size=4).digest(), "little")


# --- families ---------------------------------------------------------------------------------
FAMILIES: dict[str, Callable[[Op, DType, dict], Iterator[Spec]]] = {}


def family(name: str):
    def register(fn):
        FAMILIES[name] = fn
        return fn
    return register


def case_dtypes(op: Op) -> tuple[DType, ...]:
    """The dtypes an op is tested in: those it declares (cast: every source dtype)."""
    return tuple(op.dtypes) or dt.ALL_DTYPES


EDGE_VALUES = ("values=special", "values=subnormal", "values=large", "values=small", "values=masked",
               "values=offset", "values=overflow", "values=ties", "values=nan", "targets=")


def primary_dtype(op: Op) -> DType:
    """The dtype an op is exercised most in: float32 where it takes it, else its first dtype."""
    dtypes = case_dtypes(op)
    return dt.float32 if dt.float32 in dtypes else dtypes[0]


def cases_for(op: Op, dtype: DType, *, quick: bool = False, sample: bool = False) -> Iterator[Case]:
    """The cases of one op in one dtype. quick: without the big sizes. sample: of the plain
    shape sweep only every third spec (the value edge cases and layouts all stay)."""
    params = dict(op.cases or {})
    gen = FAMILIES.get(params.get("family"))
    if gen is None:
        raise KeyError(f"op {op.name} names no known case family: {op.cases!r}")
    for i, spec in enumerate(gen(op, dtype, params)):
        if quick and not spec.quick:
            continue
        if sample and i % 3 and not spec.layouts and not any(e in spec.label for e in EDGE_VALUES):
            continue
        base = f"{op.name}[{dtype.name}] {spec.label}"
        seed = stable_seed(base)
        inputs, attrs = spec.build(np.random.default_rng(seed))
        yield Case(op, dtype, spec.label, tuple(inputs), dict(attrs), seed, "contiguous", spec.quick)
        if spec.layouts:
            for layout in LAYOUTS:
                yield Case(op, dtype, spec.label, tuple(inputs), dict(attrs), seed, layout, spec.quick)


def all_cases(ops, dtypes=None, *, quick: bool = False, sample_secondary: bool = False) -> Iterator[Case]:
    """sample_secondary: sample the shape sweep in every dtype but the op's primary one."""
    wanted = None if dtypes is None else {d.name for d in dtypes}
    for op in ops:
        for dtype in case_dtypes(op):
            if wanted is None or dtype.name in wanted:
                sample = sample_secondary and dtype is not primary_dtype(op)
                yield from cases_for(op, dtype, quick=quick, sample=sample)


# --- values -----------------------------------------------------------------------------------
def finfo(dtype: DType):
    return ml_dtypes.finfo(dtype.numpy)


def rounded(x, dtype: DType) -> np.ndarray:
    """float64 (or int) values as an array of `dtype`: round to nearest even, ints clipped."""
    x = np.asarray(x)
    if dtype is dt.bool_:
        return np.array(x != 0, order="C")
    if dtype.is_integer:
        info = np.iinfo(dtype.numpy)
        return np.array(np.clip(np.round(x), info.min, info.max).astype(dtype.numpy), order="C")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array(np.asarray(x, np.float64).astype(dtype.numpy), order="C")


class Values:
    """Draws float64 values for one case and rounds them to the dtype under test."""

    def __init__(self, rng: np.random.Generator, dtype: DType):
        self.rng = rng
        self.dtype = dtype

    def uniform(self, shape, lo=-3.0, hi=3.0, dtype: DType | None = None) -> np.ndarray:
        dtype = dtype or self.dtype
        if dtype is dt.bool_:
            return self.rng.random(shape) < 0.5
        if dtype.is_integer:
            info = np.iinfo(dtype.numpy)
            low, high = max(int(np.ceil(lo)), int(info.min)), min(int(np.floor(hi)), int(info.max))
            return rounded(self.rng.integers(low, high + 1, shape), dtype)
        return rounded(self.rng.uniform(lo, hi, shape), dtype)

    def normal(self, shape, scale=1.0, loc=0.0, dtype: DType | None = None) -> np.ndarray:
        dtype = dtype or self.dtype
        if not dtype.is_floating:
            return self.uniform(shape, -3, 3, dtype)
        return rounded(self.rng.standard_normal(shape) * scale + loc, dtype)

    def small(self, shape, positive=False) -> np.ndarray:
        lo = 1e-4 if positive else -1e-3
        return self.uniform(shape, lo, 1e-3)

    def subnormal(self, shape, positive=False) -> np.ndarray:
        tiny = float(finfo(self.dtype).smallest_normal)
        sign = 1.0 if positive else self.rng.choice([-1.0, 1.0], shape)
        return rounded(self.rng.uniform(0.05, 0.95, shape) * tiny * sign, self.dtype)

    def large(self, shape, magnitude: float | None = None, positive=False) -> np.ndarray:
        top = float(finfo(self.dtype).max) if magnitude is None else magnitude
        sign = 1.0 if positive else self.rng.choice([-1.0, 1.0], shape)
        return rounded(self.rng.uniform(0.5, 1.0, shape) * top * sign, self.dtype)

    def ties(self, shape) -> np.ndarray:
        """Values from a tiny set, so equal elements (ties) are common."""
        return rounded(self.rng.integers(-2, 3, shape), self.dtype)

    def inject(self, x: np.ndarray, specials=(np.nan, np.inf, -np.inf, -0.0)) -> np.ndarray:
        """Put each special value at a random position (when the array is large enough)."""
        if not self.dtype.is_floating or x.size < len(specials):
            return x
        out = np.array(x, copy=True).reshape(-1)
        where = self.rng.choice(out.size, size=len(specials), replace=False)
        for i, v in zip(where, specials):
            out[i] = v
        return out.reshape(x.shape)

    def indices(self, shape, n: int, dtype: DType = dt.int64) -> np.ndarray:
        """Integer indices in [0, n), including both ends when there is room."""
        idx = self.rng.integers(0, max(n, 1), shape) if n else np.zeros(shape, np.int64)
        flat = idx.reshape(-1)
        if flat.size >= 2 and n:
            flat[0], flat[-1] = 0, n - 1
        return np.array(idx.astype(dtype.numpy), order="C")


def specials_for(dtype: DType) -> tuple:
    """NaN and ±inf where the dtype has them (float8_e4m3fn has no infinity), and -0.0."""
    if dtype is dt.float8_e4m3fn:
        return (np.nan, -0.0)
    return (np.nan, np.inf, -np.inf, -0.0)


from accel.conformance import families_basic, families_fp8, families_nn  # noqa: E402,F401  (they register)
