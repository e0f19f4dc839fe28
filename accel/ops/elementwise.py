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
from accel.autodiff import grad_rules

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
neg = _unary("neg", np.negative, onnx="Neg", vjp=grad_rules.neg, dtypes=NUMERIC, prepare=None, infer=elementwise_infer,
             doc="-x elementwise.")
exp = _unary("exp", np.exp, vjp=grad_rules.exp, domain=(-10.0, 10.0), onnx="Exp", doc="e**x elementwise.")
log = _unary("log", np.log, vjp=grad_rules.log, domain=(1e-3, 100.0), onnx="Log", doc="Natural logarithm elementwise.")
sqrt = _unary("sqrt", np.sqrt, vjp=grad_rules.sqrt, domain=(0.0, 100.0), onnx="Sqrt", doc="Square root elementwise.")
sin = _unary("sin", np.sin, vjp=grad_rules.sin, domain=(-6.0, 6.0), onnx="Sin", doc="Sine elementwise (radians).")
cos = _unary("cos", np.cos, vjp=grad_rules.cos, domain=(-6.0, 6.0), onnx="Cos", doc="Cosine elementwise (radians).")
tanh = _unary("tanh", np.tanh, vjp=grad_rules.tanh, domain=(-5.0, 5.0), onnx="Tanh", doc="Hyperbolic tangent elementwise.")
erf = _unary("erf", np.vectorize(math.erf, otypes=[np.float64]), onnx="Erf", vjp=grad_rules.erf,
             doc="Gauss error function elementwise (for exact GELU).")
abs = _unary("abs", np.abs, onnx="Abs", vjp=grad_rules.abs, dtypes=NUMERIC, prepare=None, infer=elementwise_infer,
             doc="|x| elementwise.")


def _rsqrt_decomposition(x):
    return div(1.0, sqrt(x))


rsqrt = _unary("rsqrt", lambda x: 1.0 / np.sqrt(x), domain=(1e-3, 100.0), kind=COMPOSITE,
               decompose=_rsqrt_decomposition, vjp=grad_rules.rsqrt, doc="1/sqrt(x) elementwise.")

# --- binary ---------------------------------------------------------------------------------
add = _binary("add", np.add, onnx="Add", vjp=grad_rules.add, dtypes=NUMERIC, doc="x + y with broadcasting.")
sub = _binary("sub", np.subtract, onnx="Sub", vjp=grad_rules.sub, doc="x - y with broadcasting.")
mul = _binary("mul", np.multiply, onnx="Mul", vjp=grad_rules.mul, doc="x * y with broadcasting.")
div = _binary("div", np.divide, onnx="Div", vjp=grad_rules.div, dtypes=FLOATS, prepare=prepare_float_binary,
              rhs_domain=(0.5, 3.0),
              doc="True division x / y with broadcasting; integer inputs give float32.")
pow = _binary("pow", np.power, onnx="Pow", vjp=grad_rules.pow, dtypes=FLOATS, prepare=prepare_float_binary,
              domain=(0.1, 3.0), rhs_domain=(-2.0, 2.0),
              doc="x ** y with broadcasting; integer inputs give float32.")
maximum = _binary("maximum", np.maximum, onnx="Max", vjp=grad_rules.maximum, doc="Elementwise maximum (NaN propagates).")
minimum = _binary("minimum", np.minimum, onnx="Min", vjp=grad_rules.minimum, doc="Elementwise minimum (NaN propagates).")

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
           vjp=grad_rules.where,
           doc="Select x where cond is True, else y, with broadcasting.",
           cases={"family": "where"})


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
    vjp=grad_rules.cast,
    exact=True, cases={"family": "cast"},
    doc="""Convert x to `dtype`, rounding to nearest even.

    Float to int truncates toward zero. Overflow follows the target format: float8_e4m3fn has no
    infinity, so out-of-range values and ±inf become NaN; float8_e5m2 overflows to ±inf. With
    saturate=True (float8 targets only) finite values clamp to the largest finite value (448 for
    e4m3fn, 57344 for e5m2), as scaled float8 training recipes expect.""",
)
