"""Case families for the FP8 ops of accel/ops/fp8.py: quantize (bit-exact, saturation, NaN,
subnormals, ties), dequantize, the block-scaled GEMM (partial edge blocks) and the FP8 linear
(tensor / row / block granularity, precomputed tensor-wise scales). A float8-stored weight is
tested in tests/precision: the reference sees inputs upcast to float64 and cannot tell it apart."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.conformance.families_basic import _label
from accel.conformance.generators import Spec, Values, family, rounded
from accel.ops.fp8 import FLOAT8_MAX, scale_shape

F8 = (dt.float8_e4m3fn, dt.float8_e5m2)


@family("fp8_quantize")
def fp8_quantize(op, dtype, params):
    for target in F8:
        top = FLOAT8_MAX[target]
        for shape, scale_kind in (((), "tensor"), ((5, 7), "tensor"), ((4, 33), "row"), ((0, 3), "tensor")):
            def build(rng, shape=shape, scale_kind=scale_kind, target=target):
                x = Values(rng, dtype).normal(shape, 20.0)
                s_shape = () if scale_kind == "tensor" else (shape[0], 1)
                return (x, rounded(rng.uniform(0.05, 2.0, s_shape), dt.float32)), {"dtype": target}
            yield Spec(_label(shape=shape, scale=scale_kind, dtype=target.name), build)

        def edges(rng, target=target, top=top):
            v = Values(rng, dtype)
            x = np.concatenate([v.normal((40,), top * 0.5), [top, top * 1.01, -top * 3, 0.0, -0.0, np.nan],
                                v.subnormal((8,))])
            if dtype is not dt.bfloat16 or top < 6e4:
                x = np.concatenate([x, [np.inf, -np.inf]])
            return (rounded(x, dtype), rounded(np.ones(()), dt.float32)), {"dtype": target}
        yield Spec(_label(shape=(56,), dtype=target.name, values="special+overflow+subnormal"), edges)

        def no_saturate(rng, target=target, top=top):
            x = rounded(np.array([top, top * 4, -top * 4, 1.0]), dtype)
            return (x, rounded(np.ones(()), dt.float32)), {"dtype": target, "saturate": False}
        yield Spec(_label(shape=(4,), dtype=target.name, saturate=False, values="overflow"), no_saturate)


@family("fp8_dequantize")
def fp8_dequantize(op, dtype, params):
    for shape, s_shape in (((5, 7), ()), ((4, 33), (4, 1)), ((0, 3), ())):
        def build(rng, shape=shape, s_shape=s_shape):
            return (Values(rng, dtype).normal(shape, 4.0), rounded(rng.uniform(0.01, 3.0, s_shape), dt.float32)), {}
        yield Spec(_label(shape=shape, scale=s_shape), build)
    for out in (dt.bfloat16,):
        yield Spec(_label(shape=(3, 5), out_dtype=out.name),
                   lambda rng, out=out: ((Values(rng, dtype).normal((3, 5)), rounded(np.float32(0.3), dt.float32)),
                                         {"dtype": out}))


@family("block_scaled_matmul")
def block_scaled_matmul(op, dtype, params):
    cases = (((7, 256, 130), (1, 128), (128, 128)), ((5, 100, 9), (1, 128), (128, 128)),
             ((16, 64, 8), (1, 32), (32, 8)), ((1, 1, 1), (1, 128), (128, 128)))
    for (m, k, n), ba, bb in cases:
        def build(rng, m=m, k=k, n=n, ba=ba, bb=bb):
            v = Values(rng, dtype)
            sa = rounded(rng.uniform(0.01, 2.0, scale_shape((m, k), ba)), dt.float32)
            sb = rounded(rng.uniform(0.01, 2.0, scale_shape((k, n), bb)), dt.float32)
            return (v.normal((m, k), 4.0), v.normal((k, n), 4.0), sa, sb), {"block_a": ba, "block_b": bb}
        yield Spec(_label(m=m, k=k, n=n, block_a=ba, block_b=bb), build)


@family("fp8_linear")
def fp8_linear(op, dtype, params):
    for granularity in ("tensor", "row", "block"):
        for lead, k, n in (((5,), 16, 7), ((2, 3), 160, 9), ((1,), 1, 1)):
            def build(rng, lead=lead, k=k, n=n, granularity=granularity):
                v = Values(rng, dtype)
                return (v.normal(lead + (k,)), v.normal((n, k), 0.5), v.normal((n,))), {"granularity": granularity}
            yield Spec(_label(x=lead + (k,), out=n, granularity=granularity), build)

    def given_scales(rng):  # delayed scaling: scales from an amax history, values past them saturate
        v = Values(rng, dtype)
        x, w = v.normal((6, 32), 3.0), v.normal((5, 32))
        return (x, w, None, rounded(np.full((1, 1), 0.004), dt.float32),
                rounded(np.full((1, 1), 0.01), dt.float32)), {"granularity": "tensor", "x_dtype": dt.float8_e5m2}
    yield Spec(_label(x=(6, 32), out=5, granularity="tensor", scales="given"), given_scales)
