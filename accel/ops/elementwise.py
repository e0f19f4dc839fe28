"""Elementwise primitives and their small composites (rsqrt, logical ops, ne/le/ge).

Each op is declared once here. `cases` names a conformance case family
(see accel/conformance/generators.py) with its parameters.
"""
from __future__ import annotations

import math

import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import DType, as_dtype
from accel.core.op import COMPOSITE, PRIMITIVE, Op
from accel.ops._rules import (
    compare_infer, elementwise_infer, float_elementwise_infer, prepare_binary,
    prepare_float_binary, prepare_float_unary, prepare_where, broadcast_shapes, require_same_dtype,
    spec,
)
from accel.core.errors import DTypeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import float_mask, like, needs, unbroadcast

FLOATS = dt.FLOAT_DTYPES
NUMERIC = dt.FLOAT_DTYPES + dt.INT_DTYPES
ANY = dt.ALL_DTYPES


def _unary(name, reference, *, domain=(-3.0, 3.0), onnx=None, doc="", dtypes=FLOATS, kind=PRIMITIVE,
           decompose=None, prepare=prepare_float_unary, infer=float_elementwise_infer, vjp=None):
    return Op(name, kind=kind, inputs=("x",), infer=infer, reference=reference,
              decompose=decompose, prepare=prepare, vjp=vjp, dtypes=dtypes, onnx=onnx, doc=doc,
              cases={"family": "unary", "domain": domain})


def _binary(name, reference, *, domain=(-3.0, 3.0), onnx=None, doc="", dtypes=NUMERIC,
            prepare=prepare_binary, kind=PRIMITIVE, decompose=None, rhs_domain=None, vjp=None):
    return Op(name, kind=kind, inputs=("x", "y"), infer=elementwise_infer, reference=reference,
              decompose=decompose, prepare=prepare, vjp=vjp, dtypes=dtypes, onnx=onnx, doc=doc,
              cases={"family": "binary", "domain": domain, "rhs_domain": rhs_domain})


def _compare(name, reference, *, onnx=None, kind=PRIMITIVE, decompose=None):
    return Op(name, kind=kind, inputs=("x", "y"), infer=compare_infer, reference=reference,
              decompose=decompose, prepare=prepare_binary, dtypes=ANY, onnx=onnx, exact=True,
              doc=f"Elementwise x {name} y with broadcasting; returns bool.",
              cases={"family": "compare"})


# --- unary ----------------------------------------------------------------------------------
neg = _unary("neg", np.negative, onnx="Neg", dtypes=NUMERIC, prepare=None, infer=elementwise_infer,
             doc="-x elementwise.")


@neg.defvjp
def _neg_vjp(g, out, x):
    return (_ops.neg(g),)


exp = _unary("exp", np.exp, domain=(-10.0, 10.0), onnx="Exp", doc="e**x elementwise.")


@exp.defvjp
def _exp_vjp(g, out, x):
    return (_ops.mul(g, out),)


log = _unary("log", np.log, domain=(1e-3, 100.0), onnx="Log", doc="Natural logarithm elementwise.")


@log.defvjp
def _log_vjp(g, out, x):
    return (_ops.div(g, x),)


sqrt = _unary("sqrt", np.sqrt, domain=(0.0, 100.0), onnx="Sqrt", doc="Square root elementwise.")


@sqrt.defvjp
def _sqrt_vjp(g, out, x):
    return (_ops.div(g, _ops.mul(out, 2.0)),)


sin = _unary("sin", np.sin, domain=(-6.0, 6.0), onnx="Sin", doc="Sine elementwise (radians).")


@sin.defvjp
def _sin_vjp(g, out, x):
    return (_ops.mul(g, _ops.cos(x)),)


cos = _unary("cos", np.cos, domain=(-6.0, 6.0), onnx="Cos", doc="Cosine elementwise (radians).")


@cos.defvjp
def _cos_vjp(g, out, x):
    return (_ops.neg(_ops.mul(g, _ops.sin(x))),)


tanh = _unary("tanh", np.tanh, domain=(-5.0, 5.0), onnx="Tanh", doc="Hyperbolic tangent elementwise.")


@tanh.defvjp
def _tanh_vjp(g, out, x):
    return (_ops.mul(g, _ops.sub(1.0, _ops.mul(out, out))),)


erf = _unary("erf", np.vectorize(math.erf, otypes=[np.float64]), onnx="Erf",
             doc="Gauss error function elementwise (for exact GELU).")


@erf.defvjp
def _erf_vjp(g, out, x):
    return (_ops.mul(g, _ops.mul(_ops.exp(_ops.neg(_ops.mul(x, x))), 2.0 / math.sqrt(math.pi))),)


abs = _unary("abs", np.abs, onnx="Abs", dtypes=NUMERIC, prepare=None, infer=elementwise_infer,
             doc="|x| elementwise.")


@abs.defvjp
def _abs_vjp(g, out, x):
    sign = _ops.sub(float_mask(_ops.gt(x, 0.0), x), float_mask(_ops.lt(x, 0.0), x))
    return (_ops.mul(g, sign),)  # 0 at x == 0, as torch and jax


def _rsqrt_decomposition(x):
    return div(1.0, sqrt(x))


rsqrt = _unary("rsqrt", lambda x: 1.0 / np.sqrt(x), domain=(1e-3, 100.0), kind=COMPOSITE,
               decompose=_rsqrt_decomposition, doc="1/sqrt(x) elementwise.")


@rsqrt.defvjp
def _rsqrt_vjp(g, out, x):
    # d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 out^3
    return (_ops.mul(_ops.mul(g, -0.5), _ops.mul(out, _ops.mul(out, out))),)


# --- binary ---------------------------------------------------------------------------------
add = _binary("add", np.add, onnx="Add", dtypes=NUMERIC, doc="x + y with broadcasting.")


@add.defvjp
def _add_vjp(g, out, x, y):
    return (unbroadcast(g, x.shape) if needs(x) else None,
            unbroadcast(g, y.shape) if needs(y) else None)


sub = _binary("sub", np.subtract, onnx="Sub", doc="x - y with broadcasting.")


@sub.defvjp
def _sub_vjp(g, out, x, y):
    return (unbroadcast(g, x.shape) if needs(x) else None,
            unbroadcast(_ops.neg(g), y.shape) if needs(y) else None)


mul = _binary("mul", np.multiply, onnx="Mul", doc="x * y with broadcasting.")


@mul.defvjp
def _mul_vjp(g, out, x, y):
    return (unbroadcast(_ops.mul(g, y), x.shape) if needs(x) else None,
            unbroadcast(_ops.mul(g, x), y.shape) if needs(y) else None)


div = _binary("div", np.divide, onnx="Div", dtypes=FLOATS, prepare=prepare_float_binary,
              rhs_domain=(0.5, 3.0),
              doc="True division x / y with broadcasting; integer inputs give float32.")


@div.defvjp
def _div_vjp(g, out, x, y):
    gx = _ops.div(g, y)
    return (unbroadcast(gx, x.shape) if needs(x) else None,
            unbroadcast(_ops.neg(_ops.mul(gx, out)), y.shape) if needs(y) else None)


pow = _binary("pow", np.power, onnx="Pow", dtypes=FLOATS, prepare=prepare_float_binary,
              domain=(0.1, 3.0), rhs_domain=(-2.0, 2.0),
              doc="x ** y with broadcasting; integer inputs give float32.")


@pow.defvjp
def _pow_vjp(g, out, x, y):
    gx = gy = None
    if needs(x):
        gx = unbroadcast(_ops.mul(g, _ops.mul(y, _ops.pow(x, _ops.sub(y, 1.0)))), x.shape)
    if needs(y):
        # d/dy x^y = x^y log x; 0 where x == 0 (as torch), NaN for a negative base.
        safe_log = _ops.log(_ops.where(_ops.eq(x, 0.0), 1.0, x))
        gy = unbroadcast(_ops.mul(g, _ops.mul(out, safe_log)), y.shape)
    return gx, gy


maximum = _binary("maximum", np.maximum, onnx="Max", doc="Elementwise maximum (NaN propagates).")


def _select_vjp(g, x, y, first_wins):
    # Ties split the gradient evenly (torch and jax do the same for maximum/minimum).
    share = _ops.add(float_mask(first_wins, g), _ops.mul(float_mask(_ops.eq(x, y), g), 0.5))
    return (unbroadcast(_ops.mul(g, share), x.shape) if needs(x) else None,
            unbroadcast(_ops.mul(g, _ops.sub(1.0, share)), y.shape) if needs(y) else None)


@maximum.defvjp
def _maximum_vjp(g, out, x, y):
    return _select_vjp(g, x, y, _ops.gt(x, y))


minimum = _binary("minimum", np.minimum, onnx="Min", doc="Elementwise minimum (NaN propagates).")


@minimum.defvjp
def _minimum_vjp(g, out, x, y):
    return _select_vjp(g, x, y, _ops.lt(x, y))


# --- comparisons and logic ------------------------------------------------------------------
eq = _compare("eq", np.equal, onnx="Equal")
lt = _compare("lt", np.less, onnx="Less")
gt = _compare("gt", np.greater, onnx="Greater")
ne = _compare("ne", np.not_equal, kind=COMPOSITE, decompose=lambda x, y: logical_not(eq(x, y)))
# Not `not(gt)`: with a NaN operand every comparison is False, so le/ge need lt|eq, gt|eq.
le = _compare("le", np.less_equal, onnx="LessOrEqual", kind=COMPOSITE,
              decompose=lambda x, y: logical_or(lt(x, y), eq(x, y)))
ge = _compare("ge", np.greater_equal, onnx="GreaterOrEqual", kind=COMPOSITE,
              decompose=lambda x, y: logical_or(gt(x, y), eq(x, y)))


def _bool_infer(*xs, **_):
    for x in xs:
        if x.dtype is not dt.bool_:
            raise DTypeError(f"logical ops take bool inputs, got {x.dtype.name}",
                             hint="build bool tensors with comparisons (accel.ops.gt, eq, ...)")
    return spec(broadcast_shapes(*(x.shape for x in xs)), dt.bool_)


logical_not = Op("logical_not", kind=PRIMITIVE, inputs=("x",), infer=_bool_infer,
                 reference=np.logical_not, dtypes=(dt.bool_,), onnx="Not", exact=True,
                 doc="Elementwise NOT of a bool tensor.", cases={"family": "logical", "arity": 1})
logical_and = Op("logical_and", kind=COMPOSITE, inputs=("x", "y"), infer=_bool_infer,
                 reference=np.logical_and, dtypes=(dt.bool_,), onnx="And", exact=True,
                 decompose=lambda x, y: where(x, y, x),
                 doc="Elementwise AND of bool tensors.", cases={"family": "logical", "arity": 2})
logical_or = Op("logical_or", kind=COMPOSITE, inputs=("x", "y"), infer=_bool_infer,
                reference=np.logical_or, dtypes=(dt.bool_,), onnx="Or", exact=True,
                decompose=lambda x, y: where(x, x, y),
                doc="Elementwise OR of bool tensors.", cases={"family": "logical", "arity": 2})


def _where_infer(cond, x, y, **_):
    if cond.dtype is not dt.bool_:
        raise DTypeError(f"condition must be bool, got {cond.dtype.name}",
                         hint="build it with a comparison (accel.ops.gt, eq, ...)")
    dtype = require_same_dtype(x, y)
    return spec(broadcast_shapes(cond.shape, x.shape, y.shape), dtype)


where = Op("where", kind=PRIMITIVE, inputs=("cond", "x", "y"), infer=_where_infer,
           reference=np.where, prepare=prepare_where, dtypes=ANY, onnx="Where", exact=True,
           doc="Select x where cond is True, else y, with broadcasting.",
           cases={"family": "where"})


@where.defvjp
def _where_vjp(g, out, cond, x, y):
    return (None,
            unbroadcast(_ops.where(cond, g, 0.0), x.shape) if needs(x) else None,
            unbroadcast(_ops.where(cond, 0.0, g), y.shape) if needs(y) else None)


# --- cast -----------------------------------------------------------------------------------
def _cast_infer(x, *, dtype, saturate=False):
    return spec(x.shape, as_dtype(dtype))


def _prepare_cast(args, attrs):
    dtype = as_dtype(attrs["dtype"])
    return args, {"dtype": dtype, "saturate": bool(attrs.get("saturate", False))}


_ML_FLOATS = frozenset(d.numpy for d in (dt.bfloat16, dt.float8_e4m3fn, dt.float8_e5m2))


def cast_reference(x, *, dtype, saturate=False):
    """Round-to-nearest-even through ml_dtypes; float8 overflow per the format (see doc)."""
    dtype = as_dtype(dtype)
    x = np.asarray(x)
    if x.dtype in _ML_FLOATS:  # exact; bfloat16/e4m3fn report numpy kind "V", not "f"
        x = x.astype(np.float32)
    if saturate and dtype in dt.FLOAT8_DTYPES and x.dtype.kind == "f":
        top = 57344.0 if dtype is dt.float8_e5m2 else 448.0
        x = np.where(np.isnan(x), x, np.clip(x, -top, top))
    if dtype.kind in "ib" and x.dtype.kind == "f":
        x = np.trunc(x)
    if dtype.is_floating and x.dtype != np.float64 and x.dtype.kind == "f" and x.dtype.itemsize < 4:
        x = x.astype(np.float32)  # ml_dtypes converts exactly through float32
    return x.astype(dtype.numpy)


cast = Op(
    "cast", kind=PRIMITIVE, inputs=("x",), attrs={"dtype": dt.float32, "saturate": False},
    infer=_cast_infer, reference=cast_reference, prepare=_prepare_cast, dtypes=ANY, onnx="Cast",
    exact=True, cases={"family": "cast"},
    doc="""Convert x to `dtype`, rounding to nearest even.

    Float to int truncates toward zero. Overflow follows the target format: float8_e4m3fn has no
    infinity, so out-of-range values and ±inf become NaN; float8_e5m2 overflows to ±inf. With
    saturate=True (float8 targets only) finite values clamp to the largest finite value (448 for
    e4m3fn, 57344 for e5m2), as scaled float8 training recipes expect.""",
)


@cast.defvjp
def _cast_vjp(g, out, x, *, dtype, saturate=False):
    return (like(g, x) if x.dtype.is_floating else None,)
