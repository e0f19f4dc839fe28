"""Every accel op, declared once in the modules of this package.

Primitives are what a backend must provide; composites have a reference decomposition that runs
unless a backend registers a fused kernel. `ALL_OPS` lists them all (the op × backend table, the
conformance suite and `accel info` read it).
"""
from __future__ import annotations

from accel.core.op import Op
from accel.ops.creation import (
    arange, full, full_like, ones, ones_like, random_normal, random_uniform, zeros, zeros_like,
)
from accel.ops.elementwise import (
    abs, add, cast, cos, div, eq, erf, exp, ge, gt, le, log, logical_and, logical_not, logical_or,
    lt, maximum, minimum, mul, ne, neg, pow, rsqrt, sin, sqrt, sub, tanh, where,
)
from accel.ops.indexing import gather, index_copy, index_copy_inplace
from accel.ops.linalg import matmul
from accel.ops.movement import (
    broadcast_to, concat, flatten, getitem, permute, reshape, slice, split, squeeze, stack,
    transpose, unsqueeze,
)
from accel.ops.nn import (
    attention, cross_entropy, embedding, gelu, layer_norm, linear, log_softmax, rms_norm, rope,
    silu, softmax,
)
from accel.ops.reduction import argmax, max, mean, sum
from accel.ops.quant import scaled_matmul

ALL_OPS: tuple[Op, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Op))
PRIMITIVES: tuple[Op, ...] = tuple(op for op in ALL_OPS if op.is_primitive)
COMPOSITES: tuple[Op, ...] = tuple(op for op in ALL_OPS if not op.is_primitive)
BY_NAME: dict[str, Op] = {op.name: op for op in ALL_OPS}


def get_op(name: str) -> Op:
    from accel.core.errors import OpError

    op = BY_NAME.get(name)
    if op is None:
        raise OpError(f"unknown op {name!r}", hint=f"known ops: {', '.join(sorted(BY_NAME))}")
    return op
