"""matmul: the one linear-algebra primitive."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import ShapeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import needs, unbroadcast
from accel.core.op import PRIMITIVE, Op
from accel.ops._rules import broadcast_shapes, prepare_binary, require_same_dtype, spec


def _matmul_infer(a, b):
    dtype = require_same_dtype(a, b)
    if a.ndim < 1 or b.ndim < 1:
        raise ShapeError("matmul needs inputs of at least 1 dimension",
                         hint="use accel.ops.mul for scalars")
    sa = (1,) + tuple(a.shape) if a.ndim == 1 else tuple(a.shape)
    sb = tuple(b.shape) + (1,) if b.ndim == 1 else tuple(b.shape)
    if sa[-1] != sb[-2]:
        raise ShapeError(
            f"contracting dimensions differ: {list(a.shape)} @ {list(b.shape)} ({sa[-1]} vs {sb[-2]})",
            hint="the last dim of the left input must equal the second-to-last of the right; "
                 "transpose one of them (accel.ops.transpose)")
    batch = broadcast_shapes(sa[:-2], sb[:-2])
    out = batch + (sa[-2], sb[-1])
    if a.ndim == 1:
        out = out[:-2] + out[-1:]
    if b.ndim == 1:
        out = out[:-1]
    return spec(out, dtype)


def _matmul_reference(a, b):
    return np.matmul(a, b)


matmul = Op("matmul", kind=PRIMITIVE, inputs=("a", "b"), infer=_matmul_infer,
            reference=_matmul_reference, prepare=prepare_binary,
            dtypes=dt.FLOAT_DTYPES + (dt.int32, dt.int64), accumulating=True, onnx="MatMul",
            cases={"family": "matmul"},
            doc="""Matrix product with numpy semantics: batch dims broadcast, 1-d inputs are
            promoted and the added dim removed. Low-precision floats accumulate in float32.""")


@matmul.defvjp
def _matmul_vjp(g, out, a, b):
    a2 = _ops.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = _ops.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    g_shape = tuple(g.shape)
    if a.ndim == 1:
        g_shape = g_shape[:-1] + (1,) + g_shape[-1:] if b.ndim > 1 else g_shape + (1,)
    if b.ndim == 1:
        g_shape = g_shape + (1,)
    g2 = _ops.reshape(g, g_shape) if g_shape != tuple(g.shape) else g
    ga = gb = None
    if needs(a):
        ga = _ops.reshape(unbroadcast(_ops.matmul(g2, _ops.transpose(b2, -1, -2)), a2.shape), a.shape)
    if needs(b):
        gb = _ops.reshape(unbroadcast(_ops.matmul(_ops.transpose(a2, -1, -2), g2), b2.shape), b.shape)
    return ga, gb
