"""matmul: the one linear-algebra primitive."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import ShapeError
from accel.autodiff import grad_rules
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
            reference=_matmul_reference, prepare=prepare_binary, vjp=grad_rules.matmul,
            dtypes=dt.FLOAT_DTYPES + (dt.int32, dt.int64), accumulating=True, onnx="MatMul",
            cases={"family": "matmul"},
            doc="""Matrix product with numpy semantics: batch dims broadcast, 1-d inputs are
            promoted and the added dim removed. Low-precision floats accumulate in float32.""")
