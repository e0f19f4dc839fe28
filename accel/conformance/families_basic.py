"""Case families for elementwise, creation, movement, indexing and reduction ops.

Each family is a generator of `Spec`s for one (op, dtype); see generators.py. Labels name the
shapes, attributes and value kind, so a failing row says what it ran.
"""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.conformance.generators import Spec, Values, family, rounded, specials_for

# Shapes every elementwise op sees: scalar, size-1, empty, primes, 2^8+17, 1025.
UNARY_SHAPES = ((), (1,), (0,), (2, 0, 3), (5, 7), (1, 13, 1), (273,))
BIG_UNARY_SHAPES = ((1025,), (3, 1025))
BINARY_SHAPES = (
    ((), ()), ((1,), (1,)), ((0,), (0,)), ((5, 7), (5, 7)),
    ((3, 4), (3, 1)), ((3, 4), (1, 4)), ((3, 1), (1, 4)),     # docs/conformance.md broadcasting pairs
    ((), (5, 7)), ((2, 1, 5), (3, 1)), ((0, 3), (1, 3)), ((11, 13), (13,)), ((273,), (273,)),
)
BIG_BINARY_SHAPES = (((1025,), (1,)), ((4, 1025), (4, 1025)))


def _label(**parts) -> str:
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None and v != {})


def _has_negatives(domain) -> bool:
    return domain[0] < 0 < domain[1]


# --- unary ------------------------------------------------------------------------------------
@family("unary")
def unary(op, dtype, params):
    lo, hi = params.get("domain", (-3.0, 3.0))
    attr_sets = params.get("attrs") or [{}]
    floating = dtype.is_floating
    specials = specials_for(dtype) if op.is_primitive else (np.nan, -0.0)
    for attrs in attr_sets:
        a = dict(attrs)
        for shape in UNARY_SHAPES:
            yield Spec(_label(shape=shape, values="uniform", **a),
                       lambda rng, s=shape: ((Values(rng, dtype).uniform(s, lo, hi),), a),
                       layouts=len(shape) == 2)
        for shape in BIG_UNARY_SHAPES:
            yield Spec(_label(shape=shape, values="uniform", **a),
                       lambda rng, s=shape: ((Values(rng, dtype).uniform(s, lo, hi),), a), quick=False)
        if not floating:
            continue
        shape = (11, 13)
        yield Spec(_label(shape=shape, values="special", **a),
                   lambda rng: ((Values(rng, dtype).inject(Values(rng, dtype).uniform(shape, lo, hi), specials),), a))
        yield Spec(_label(shape=shape, values="subnormal", **a),
                   lambda rng: ((Values(rng, dtype).subnormal(shape, positive=lo >= 0),), a))
        if _has_negatives((lo, hi)):
            yield Spec(_label(shape=shape, values="small", **a),
                       lambda rng: ((Values(rng, dtype).small(shape),), a))


# Collectives work along axis 0 (no 0-d input); in one process they are the identity, across
# processes tests/distributed checks them against the references over every rank's input.
COLLECTIVE_SHAPES = ((1,), (0,), (2, 0, 3), (5, 7), (1, 13, 1), (273,))


@family("collective")
def collective(op, dtype, params):
    for attrs in params.get("attrs") or [{}]:
        a = dict(attrs)
        if a.get("op") == "mean" and not dtype.is_floating:
            continue  # the mean of integers is refused by the op's rule
        for shape in COLLECTIVE_SHAPES:
            yield Spec(_label(shape=shape, **a),
                       lambda rng, s=shape: ((Values(rng, dtype).uniform(s, -3.0, 3.0),), a))
        if dtype.is_floating:
            yield Spec(_label(shape=(11, 13), values="special", **a),
                       lambda rng: ((Values(rng, dtype).inject(Values(rng, dtype).uniform((11, 13), -3.0, 3.0),
                                                               specials_for(dtype)),), a))


# --- binary -----------------------------------------------------------------------------------
@family("binary")
def binary(op, dtype, params):
    lo, hi = params.get("domain") or (-3.0, 3.0)
    rlo, rhi = params.get("rhs_domain") or (lo, hi)

    def pair(shapes, kind="uniform"):
        def build(rng):
            v = Values(rng, dtype)
            if kind == "uniform":
                return (v.uniform(shapes[0], lo, hi), v.uniform(shapes[1], rlo, rhi)), {}
            if kind == "special":
                x = v.inject(v.uniform(shapes[0], lo, hi), specials_for(dtype))
                y = v.inject(v.uniform(shapes[1], rlo, rhi), specials_for(dtype) + (0.0,))
                return (x, y), {}
            if kind == "subnormal":
                return (v.subnormal(shapes[0], positive=lo >= 0), v.uniform(shapes[1], rlo, rhi)), {}
            return (v.large(shapes[0]), v.large(shapes[1])), {}  # overflow to ±inf (NaN in e4m3fn)
        return build

    for shapes in BINARY_SHAPES:
        yield Spec(_label(shapes=shapes, values="uniform"), pair(shapes), layouts=shapes[0] == (5, 7))
    for shapes in BIG_BINARY_SHAPES:
        yield Spec(_label(shapes=shapes, values="uniform"), pair(shapes), quick=False)
    if not dtype.is_floating:
        return
    shapes = ((11, 13), (11, 13))
    yield Spec(_label(shapes=shapes, values="special"), pair(shapes, "special"))
    yield Spec(_label(shapes=shapes, values="subnormal"), pair(shapes, "subnormal"))
    if _has_negatives((lo, hi)) and _has_negatives((rlo, rhi)):
        yield Spec(_label(shapes=shapes, values="large"), pair(shapes, "large"))


# --- comparisons and logic --------------------------------------------------------------------
@family("compare")
def compare(op, dtype, params):
    for shapes in BINARY_SHAPES[:9]:
        yield Spec(_label(shapes=shapes, values="ties"),
                   lambda rng, s=shapes: ((Values(rng, dtype).ties(s[0]), Values(rng, dtype).ties(s[1])), {}),
                   layouts=shapes[0] == (5, 7))
    if dtype.is_floating:
        shapes = ((11, 13), (11, 13))

        def special(rng):
            v = Values(rng, dtype)
            extra = specials_for(dtype) + (0.0,)
            return (v.inject(v.ties(shapes[0]), extra), v.inject(v.ties(shapes[1]), extra)), {}
        yield Spec(_label(shapes=shapes, values="special"), special)


@family("logical")
def logical(op, dtype, params):
    arity = params.get("arity", 2)
    shapes_list = ((), (0,), (5, 7), (1, 13)) if arity == 1 else BINARY_SHAPES[:9]
    for shapes in shapes_list:
        shapes = shapes if arity == 2 else (shapes,)
        yield Spec(_label(shapes=shapes),
                   lambda rng, s=shapes: (tuple(Values(rng, dt.bool_).uniform(x) for x in s), {}),
                   layouts=shapes[0] == (5, 7))


@family("where")
def where(op, dtype, params):
    triples = (((5, 7), (5, 7), (5, 7)), ((3, 1), (1, 4), (3, 4)), ((), (2, 3), ()),
               ((0, 3), (1, 3), (0, 1)), ((2, 3, 4), (4,), (3, 1)), ((1,), (1,), (1,)))
    for shapes in triples:
        def build(rng, s=shapes):
            v = Values(rng, dtype)
            x = v.inject(v.normal(s[1]), specials_for(dtype))
            return (Values(rng, dt.bool_).uniform(s[0]), x, v.normal(s[2])), {}
        yield Spec(_label(shapes=shapes), build, layouts=shapes[0] == (5, 7))


# --- cast -------------------------------------------------------------------------------------
def _cast_values(v: Values, src, dst, kind, shape):
    rng = v.rng
    if src is dt.bool_:
        return v.uniform(shape, dtype=dt.bool_)
    if kind == "normal":
        if dst.is_integer or dst is dt.bool_ or not src.is_floating:
            top = 100.0 if dst.bits >= 16 or dst.is_floating else 120.0
            top = min(top, float(np.iinfo(src.numpy).max) if src.is_integer else top)
            x = rng.uniform(-top, top, shape)
            x = np.trunc(x) if dst is dt.bool_ or not src.is_floating else x  # float->bool: see doc
            return rounded(x, src)
        return rounded(rng.standard_normal(shape) * 4.0, src)
    if kind == "ties":  # exact midpoints between neighbours of the target: round-half-to-even
        grid = np.asarray(rng.uniform(0.5, 4.0, shape)).astype(dst.numpy).astype(np.float64)
        nxt = np.nextafter(grid.astype(dst.numpy), np.asarray(np.inf, dst.numpy)).astype(np.float64) \
            if dst in (dt.float32, dt.float64, dt.float16) else _next_up(grid, dst)
        return rounded((grid + nxt) / 2.0, src)
    if kind == "overflow":
        top = float(ml_max(dst))
        return rounded(rng.uniform(1.05, 3.0, shape) * top * rng.choice([-1.0, 1.0], shape), src)
    if kind == "special":
        return v.inject(rounded(rng.standard_normal(shape), src), specials_for(src))
    if kind == "subnormal":
        from accel.conformance.generators import finfo
        tiny = float(finfo(dst).smallest_normal)
        return rounded(rng.uniform(-1.0, 1.0, shape) * tiny, src)
    if kind == "big-ints":  # integers beyond the float's contiguous range (2^24 + 1 in float32)
        return rounded(rng.integers(2 ** 24 - 64, 2 ** 24 + 64, shape), src)
    raise ValueError(kind)


def _next_up(grid, dst):
    x = grid.astype(dst.numpy)
    bits = x.view(np.uint8 if dst.bits == 8 else np.uint16)
    return (bits + 1).view(dst.numpy).astype(np.float64)


def ml_max(dtype):
    from accel.conformance.generators import finfo
    return finfo(dtype).max


@family("cast")
def cast(op, dtype, params):
    src = dtype
    for dst in dt.ALL_DTYPES:
        kinds = ["normal"]
        if src.is_floating and dst.is_floating:
            kinds += ["special", "subnormal"]
            if dst.bits < src.bits or (dst.bits == src.bits and dst is not src):
                kinds += ["ties"]
                if float(ml_max(src)) > float(ml_max(dst)):
                    kinds += ["overflow"]
        if src.is_integer and src.bits >= 32 and dst.is_floating:
            kinds += ["big-ints"]
        for kind in kinds:
            saturates = [False, True] if dst in dt.FLOAT8_DTYPES and kind in ("overflow", "special") else [False]
            for sat in saturates:
                attrs = {"dtype": dst, "saturate": sat} if sat else {"dtype": dst}
                shape = (4, 9)
                yield Spec(_label(to=dst.name, values=kind, saturate=sat or None),
                           lambda rng, k=kind, d=dst, a=attrs, s=shape: ((_cast_values(Values(rng, src), src, d, k, s),), a),
                           layouts=kind == "normal" and dst is dt.float32)
    for shape in ((), (0,), (1, 1)):
        yield Spec(_label(to="float32", shape=shape),
                   lambda rng, s=shape: ((Values(rng, src).normal(s),), {"dtype": dt.float32}))


# --- creation ---------------------------------------------------------------------------------
@family("full")
def full(op, dtype, params):
    if dtype is dt.bool_:
        values = (True, False)
    elif dtype.is_integer:
        values = (0, -3, 7, int(np.iinfo(dtype.numpy).max))
    else:
        values = (0.0, -0.0, 1.5, -2.25, 3.14159, 1e4 if dtype.bits > 8 else 300.0)
    for value in values:
        for shape in ((), (0,), (3, 5)):
            yield Spec(_label(shape=shape, value=value),
                       lambda rng, s=shape, x=value: ((), {"shape": s, "value": x, "dtype": dtype}))


@family("arange")
def arange(op, dtype, params):
    ranges = [(0, 5, 1), (2, 11, 3), (5, 0, -1), (3, 3, 1), (-4, 4, 2)]
    if dtype.is_floating:
        ranges += [(0.0, 2.0, 0.25), (1.0, -1.0, -0.5)]
    for start, stop, step in ranges:
        yield Spec(_label(start=start, stop=stop, step=step),
                   lambda rng, a=start, b=stop, c=step: ((), {"start": a, "stop": b, "step": c, "dtype": dtype}))


@family("random")
def random(op, dtype, params):
    extra = ({}, {"mean": 2.0, "std": 0.5} if "mean" in op.attrs else {"low": -3.0, "high": 5.0})
    for shape in ((), (0,), (5, 7), (1025,)):
        for attrs in extra:
            yield Spec(_label(shape=shape, **attrs),
                       lambda rng, s=shape, a=attrs: ((), {"shape": s, "dtype": dtype,
                                                           "seed": int(rng.integers(0, 2 ** 31)), **a}))


# --- reductions -------------------------------------------------------------------------------
REDUCE_CASES = (
    ((), None, False), ((7,), None, False), ((7,), 0, False), ((5, 7), 0, False), ((5, 7), 1, False),
    ((5, 7), None, False), ((5, 7), -1, True), ((2, 3, 4), (0, 2), False), ((1, 1), 0, True),
    ((3, 0), 1, False), ((0, 4), 0, True), ((4, 273), 1, False), ((2, 64), 1, False), ((2, 512), 1, False),
)
BIG_REDUCE_CASES = (((2, 4096), 1, False), ((1025,), 0, False), ((3, 1025), None, False))


@family("reduce")
def reduce(op, dtype, params):
    nonempty = params.get("nonempty", False)

    def empty(shape, axis):
        axes = range(len(shape)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        return any(shape[a] == 0 for a in axes) if shape else False

    for cases, quick in ((REDUCE_CASES, True), (BIG_REDUCE_CASES, False)):
        for shape, axis, keep in cases:
            if nonempty and empty(shape, axis):
                continue
            yield Spec(_label(shape=shape, axis=axis, keepdims=keep or None),
                       lambda rng, s=shape, a=axis, k=keep: ((Values(rng, dtype).normal(s),), {"axis": a, "keepdims": k}),
                       quick=quick, layouts=shape == (5, 7) and axis == 0)
    if dtype.is_floating:
        specials = (np.nan, -np.inf) if op.exact else specials_for(dtype)[:3]  # max: no -0.0 ties
        for shape, axis in (((6, 9), 1), ((6, 9), None)):
            def build(rng, s=shape, a=axis):
                v = Values(rng, dtype)
                return (v.inject(v.normal(s), specials),), {"axis": a}
            yield Spec(_label(shape=shape, axis=axis, values="special"), build)
        if not op.exact:
            yield Spec(_label(shape=(4, 33), axis=1, values="offset"),
                       lambda rng: ((Values(rng, dtype).normal((4, 33), loc=20.0),), {"axis": 1}))


@family("argmax")
def argmax(op, dtype, params):
    for shape, axis, keep in (((7,), -1, False), ((5, 7), 0, False), ((5, 7), 1, True), ((1, 1), 0, False),
                              ((2, 3, 4), 1, False), ((3, 273), -1, False)):
        yield Spec(_label(shape=shape, axis=axis, keepdims=keep or None, values="ties"),
                   lambda rng, s=shape, a=axis, k=keep: ((Values(rng, dtype).ties(s),), {"axis": a, "keepdims": k}),
                   layouts=shape == (5, 7) and axis == 0)
    yield Spec(_label(shape=(2, 4096), axis=-1), quick=False,
               build=lambda rng: ((Values(rng, dtype).normal((2, 4096)),), {"axis": -1}))
    if dtype.is_floating:
        def special(rng):
            v = Values(rng, dtype)
            return (v.inject(v.normal((6, 9)), specials_for(dtype)[:3] + (np.nan,)),), {"axis": 1}
        yield Spec(_label(shape=(6, 9), axis=1, values="special"), special)


# --- movement ---------------------------------------------------------------------------------
def _movement_values(rng, dtype, shape):
    v = Values(rng, dtype)
    x = v.normal(shape)
    return v.inject(x, specials_for(dtype)) if dtype.is_floating else x


@family("reshape")
def reshape(op, dtype, params):
    for src, dst in (((2, 3, 4), (4, 6)), ((2, 3, 4), (6, -1)), ((), (1, 1)), ((1, 1), ()),
                     ((0, 3), (3, 0)), ((1025,), (5, 205)), ((5, 7), (35,))):
        yield Spec(_label(shape=src, to=dst), lambda rng, s=src, d=dst: ((_movement_values(rng, dtype, s),), {"shape": d}),
                   layouts=src == (5, 7))


@family("permute")
def permute(op, dtype, params):
    for shape, axes in (((2, 3, 4), (2, 0, 1)), ((5, 7), (1, 0)), ((), ()), ((1, 0, 3), (2, 1, 0)),
                        ((2, 3, 4, 5), (0, 2, 1, 3)), ((3, 4), (-1, 0))):
        yield Spec(_label(shape=shape, axes=axes), lambda rng, s=shape, a=axes: ((_movement_values(rng, dtype, s),), {"axes": a}),
                   layouts=shape == (5, 7))


@family("broadcast")
def broadcast(op, dtype, params):
    for shape, to in (((3, 1), (3, 4)), ((), (2, 3)), ((1, 4), (2, 3, 4)), ((0, 1), (0, 5)),
                      ((5,), (2, 5)), ((1,), (0,)), ((5, 7), (2, 5, 7))):
        yield Spec(_label(shape=shape, to=to), lambda rng, s=shape, t=to: ((_movement_values(rng, dtype, s),), {"shape": t}),
                   layouts=shape == (5, 7))


@family("concat")
def concat(op, dtype, params):
    for shapes, axis in ((((2, 3), (4, 3)), 0), (((2, 3), (2, 0), (2, 5)), 1), (((2, 3), (2, 5)), -1),
                         (((5,),), 0), (((2, 3, 4), (2, 1, 4)), 1), (((0, 3), (0, 3)), 0), (((5, 7), (5, 7)), 0)):
        yield Spec(_label(shapes=shapes, axis=axis),
                   lambda rng, ss=shapes, a=axis: (([_movement_values(rng, dtype, s) for s in ss],), {"axis": a}),
                   layouts=shapes[0] == (5, 7))


@family("slice")
def slice_(op, dtype, params):
    for shape, axes, starts, stops, steps in (
            ((10,), (0,), (2,), (9,), (3,)), ((5, 7), (0, 1), (1, -3), (4, 100), (1, 2)),
            ((5, 7), (1,), (0,), (0,), None), ((5, 7), (0,), (-100,), (100,), None),
            ((3, 4), (), (), (), None), ((2, 3, 4), (-1,), (1,), (3,), None), ((4, 1025), (1,), (1,), (1025,), (4,))):
        attrs = {"axes": axes, "starts": starts, "stops": stops, "steps": steps}
        yield Spec(_label(shape=shape, axes=axes, starts=starts, stops=stops, steps=steps),
                   lambda rng, s=shape, a=attrs: ((_movement_values(rng, dtype, s),), a),
                   layouts=shape == (5, 7) and axes == (0, 1))


# --- indexing ---------------------------------------------------------------------------------
@family("gather")
def gather(op, dtype, params):
    for shape, idx_shape, axis, idx_dtype in (((5, 7), (3,), 0, dt.int64), ((5, 7), (2, 2), 1, dt.int32),
                                              ((5, 7), (4,), -1, dt.int64), ((5, 7), (), 0, dt.int64),
                                              ((5, 7), (0,), 0, dt.int32), ((2, 3, 4), (3, 2), 1, dt.int64),
                                              ((1025, 3), (17,), 0, dt.int64)):
        def build(rng, s=shape, i=idx_shape, a=axis, d=idx_dtype):
            v = Values(rng, dtype)
            return (_movement_values(rng, dtype, s), v.indices(i, s[a], d)), {"axis": a}
        yield Spec(_label(shape=shape, indices=idx_shape, axis=axis, index_dtype=idx_dtype.name), build,
                   layouts=shape == (5, 7) and axis == 0)


@family("index_add")
def index_add(op, dtype, params):
    """Scatter-add with repeated indices (they must accumulate), more indices than rows, an
    empty index, and the embedding-gradient shape (many tokens into a few rows)."""
    for shape, n, axis, idx_dtype in (((6, 4), 9, 0, dt.int64), ((3, 5), 4, 1, dt.int32), ((6, 4), 0, 0, dt.int64),
                                      ((2, 3, 4), 7, -1, dt.int64), ((5, 7), 5, 0, dt.int32),
                                      ((16, 8), 200, 0, dt.int64)):
        def build(rng, s=shape, k=n, a=axis, d=idx_dtype):
            v = Values(rng, dtype)
            ax = a % len(s)
            index = rng.integers(0, s[ax], size=k).astype(d.numpy)
            vshape = tuple(k if i == ax else e for i, e in enumerate(s))
            return (v.normal(s), index, v.normal(vshape)), {"axis": a}
        yield Spec(_label(shape=shape, count=n, axis=axis, index_dtype=idx_dtype.name), build,
                   layouts=shape == (5, 7))


@family("index_copy")
def index_copy(op, dtype, params):
    for shape, n, axis, idx_dtype in (((6, 4), 2, 0, dt.int64), ((3, 5), 3, 1, dt.int32), ((6, 4), 0, 0, dt.int64),
                                      ((2, 3, 4), 2, -1, dt.int64), ((5, 7), 5, 0, dt.int32)):
        def build(rng, s=shape, k=n, a=axis, d=idx_dtype):
            v = Values(rng, dtype)
            ax = a % len(s)
            index = rng.choice(s[ax], size=k, replace=False).astype(d.numpy)
            vshape = tuple(k if i == ax else e for i, e in enumerate(s))
            return (_movement_values(rng, dtype, s), index, v.normal(vshape)), {"axis": a}
        yield Spec(_label(shape=shape, count=n, axis=axis, index_dtype=idx_dtype.name), build,
                   layouts=shape == (5, 7))
