"""Case families for matmul and the transformer composites (softmax, norms, rope, attention,
embedding, linear, cross-entropy, scaled float8 matmul)."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.conformance.generators import Spec, Values, family, rounded, specials_for
from accel.conformance.families_basic import _label

# Large logits for softmax and cross-entropy (docs/conformance.md: fp32 ±1e4, fp16 ±6e4); the other
# formats get a magnitude of the same spirit: near their top for float8, 1e4 elsewhere.
LARGE_LOGITS = {"float16": 6e4, "float8_e4m3fn": 400.0, "float8_e5m2": 5e4}


def _large(dtype) -> float:
    return LARGE_LOGITS.get(dtype.name, 1e4)


@family("matmul")
def matmul(op, dtype, params):
    pairs = (((1, 1), (1, 1)), ((5, 7), (7, 11)), ((0, 4), (4, 3)), ((4, 0), (0, 3)), ((3,), (3, 4)),
             ((4, 3), (3,)), ((3,), (3,)), ((2, 3, 5), (5, 4)), ((2, 1, 4, 8), (3, 8, 2)), ((13, 64), (64, 17)),
             ((2, 256), (256, 3)))
    big = (((8, 1025), (1025, 8)), ((4, 4096), (4096, 4)))
    for group, quick in ((pairs, True), (big, False)):
        for a, b in group:
            yield Spec(_label(shapes=(a, b)),
                       lambda rng, a=a, b=b: ((Values(rng, dtype).normal(a), Values(rng, dtype).normal(b)), {}),
                       quick=quick, layouts=a == (13, 64))
    if dtype.is_floating:
        def special(rng):
            v = Values(rng, dtype)
            return (v.inject(v.normal((6, 9)), (np.nan,)), v.normal((9, 5))), {}
        yield Spec(_label(shapes=((6, 9), (9, 5)), values="nan"), special)


@family("scaled_matmul")
def scaled_matmul(op, dtype, params):
    for out in params.get("out_dtypes", ("bfloat16",)):
        for scales in params.get("scales", ("tensor",)):
            for m, k, n in ((1, 1, 1), (5, 16, 7), (16, 64, 8), (0, 8, 4)):
                def build(rng, m=m, k=k, n=n, scales=scales, out=out):
                    v = Values(rng, dtype)
                    sa_shape, sb_shape = ((), ()) if scales == "tensor" else ((m, 1), (1, n))
                    sa = rounded(rng.uniform(0.01, 2.0, sa_shape), dt.float32)
                    sb = rounded(rng.uniform(0.01, 2.0, sb_shape), dt.float32)
                    return (v.normal((m, k), 4.0), v.normal((k, n), 4.0), sa, sb), {"out_dtype": dt.as_dtype(out)}
                yield Spec(_label(m=m, k=k, n=n, scales=scales, out_dtype=out), build)


@family("softmax")
def softmax(op, dtype, params):
    shapes = (((1,), -1), ((5, 7), -1), ((5, 7), 0), ((2, 3, 4), 1), ((0, 5), -1), ((3, 1025), -1))
    for shape, axis in shapes:
        yield Spec(_label(shape=shape, axis=axis),
                   lambda rng, s=shape, a=axis: ((Values(rng, dtype).normal(s),), {"axis": a}),
                   layouts=shape == (5, 7) and axis == -1)
    yield Spec(_label(shape=(2, 4096), axis=-1), quick=False,
               build=lambda rng: ((Values(rng, dtype).normal((2, 4096)),), {"axis": -1}))
    big = _large(dtype)
    yield Spec(_label(shape=(4, 33), axis=-1, values=f"large(±{big:g})"),
               lambda rng: ((Values(rng, dtype).uniform((4, 33), -big, big),), {"axis": -1}))

    def masked(rng):
        v = Values(rng, dtype)
        x = v.normal((4, 9))
        x[0, ::2] = -np.inf if dtype is not dt.float8_e4m3fn else x[0, ::2]  # masked logits
        x[1, 3] = np.nan                                                       # NaN poisons its row
        if dtype is not dt.float8_e4m3fn:
            x[2, :] = -np.inf                                                  # fully masked row: NaN
        return (x,), {"axis": -1}
    yield Spec(_label(shape=(4, 9), axis=-1, values="masked(-inf)+nan"), masked)


@family("norm")
def norm(op, dtype, params):
    with_bias = params.get("bias", False)
    shapes = ((1, 1), (3, 7), (2, 5, 64), (0, 8), (4, 1025), (2, 4096))

    def build_for(shape, kind="normal", affine=True):
        def build(rng):
            v = Values(rng, dtype)
            d = shape[-1]
            if kind == "offset":
                x = v.normal(shape, loc=50.0)
            elif kind == "large":
                x = v.normal(shape, scale=100.0 if dtype.bits > 8 else 30.0)
            elif kind == "special":
                x = v.inject(v.normal(shape), specials_for(dtype)[:1])
            else:
                x = v.normal(shape)
            weight = v.normal((d,), scale=0.1, loc=1.0) if affine else None
            inputs = (x, weight) + ((v.normal((d,)) if affine else None,) if with_bias else ())
            return inputs, {}
        return build

    for shape in shapes:
        yield Spec(_label(shape=shape), build_for(shape), quick=shape[-1] < 1025, layouts=shape == (3, 7))
    yield Spec(_label(shape=(3, 7), affine=False), build_for((3, 7), affine=False))
    for kind in ("offset", "large", "special"):
        yield Spec(_label(shape=(4, 33), values=kind), build_for((4, 33), kind))


def _rope_tables(t, d, dtype, theta=10000.0):
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = np.outer(np.arange(t), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)                     # (T, D)
    return rounded(np.cos(angles), dtype), rounded(np.sin(angles), dtype)


@family("rope")
def rope(op, dtype, params):
    for shape, table in (((1, 1, 1, 2), "TD"), ((2, 3, 5, 8), "TD"), ((2, 3, 5, 8), "B1TD"),
                         ((1, 2, 7, 64), "TD"), ((1, 4, 1025, 16), "TD")):
        def build(rng, s=shape, table=table):
            b, _, t, d = s
            cos, sin = _rope_tables(t, d, dtype)
            if table == "B1TD":
                cos, sin = (np.ascontiguousarray(np.broadcast_to(c, (b, 1, t, d))) for c in (cos, sin))
            return (Values(rng, dtype).normal(s), cos, sin), {}
        yield Spec(_label(shape=shape, tables=table), build, quick=shape[2] < 1025,
                   layouts=shape == (2, 3, 5, 8) and table == "TD")


# (B, Hq, Hkv, T, S, D, causal, mask, scale): plain, GQA, causal (square and top-left aligned
# T < S), a bool mask with a fully masked row (must output zeros), a per-batch mask with causal.
ATTENTION = (
    (1, 1, 1, 1, 1, 4, False, None, None), (2, 4, 2, 5, 5, 8, False, None, None),
    (1, 2, 2, 7, 7, 16, True, None, None), (1, 2, 1, 3, 9, 8, True, None, None),
    (2, 2, 2, 4, 6, 8, False, "TS", None), (2, 4, 1, 3, 5, 8, True, "B1TS", None),
    (1, 1, 1, 4, 4, 8, False, None, 0.5), (1, 1, 1, 0, 4, 8, False, None, None),
)
BIG_ATTENTION = ((1, 8, 2, 16, 1025, 64, True, None, None),)


@family("attention")
def attention(op, dtype, params):
    for group, quick in ((ATTENTION, True), (BIG_ATTENTION, False)):
        for b, hq, hk, t, s, d, causal, mask, scale in group:
            def build(rng, b=b, hq=hq, hk=hk, t=t, s=s, d=d, causal=causal, mask=mask, scale=scale):
                v = Values(rng, dtype)
                q, k, val = v.normal((b, hq, t, d)), v.normal((b, hk, s, d)), v.normal((b, hk, s, d))
                m = None
                if mask == "TS":
                    m = rng.random((t, s)) < 0.7
                    m[min(1, t - 1), :] = False                               # fully masked row
                elif mask == "B1TS":
                    m = rng.random((b, 1, t, s)) < 0.7
                attrs = {"causal": causal} | ({"scale": scale} if scale is not None else {})
                return (q, k, val, m), attrs
            yield Spec(_label(q=(b, hq, t, d), kv=(b, hk, s, d), causal=causal or None, mask=mask, scale=scale),
                       build, quick=quick, layouts=(b, hq, hk, t) == (2, 4, 2, 5))


@family("embedding")
def embedding(op, dtype, params):
    for vocab, dim, ids_shape, ids_dtype in ((11, 7, (5,), dt.int64), (11, 7, (2, 3), dt.int32), (11, 7, (), dt.int64),
                                             (11, 7, (0,), dt.int64), (1, 4, (3,), dt.int64), (1025, 16, (9,), dt.int32)):
        def build(rng, vocab=vocab, dim=dim, shape=ids_shape, idd=ids_dtype):
            v = Values(rng, dtype)
            weight = v.inject(v.normal((vocab, dim)), specials_for(dtype)) if dtype.is_floating else v.normal((vocab, dim))
            return (weight, v.indices(shape, vocab, idd)), {}
        yield Spec(_label(weight=(vocab, dim), ids=ids_shape, ids_dtype=ids_dtype.name), build,
                   layouts=ids_shape == (2, 3))


@family("linear")
def linear(op, dtype, params):
    for x_shape, out, bias in (((1, 1), 1, False), ((5, 7), 11, True), ((2, 3, 16), 8, False), ((0, 4), 3, True),
                               ((4, 64), 32, True), ((3, 1025), 8, True)):
        def build(rng, xs=x_shape, out=out, bias=bias):
            v = Values(rng, dtype)
            return (v.normal(xs), v.normal((out, xs[-1]), 0.2), v.normal((out,)) if bias else None), {}
        yield Spec(_label(x=x_shape, out=out, bias=bias), build, quick=x_shape[-1] < 1025,
                   layouts=x_shape == (4, 64))


@family("cross_entropy")
def cross_entropy(op, dtype, params):
    configs = (((1, 1), "mean", None), ((5, 7), "mean", None), ((5, 7), "sum", None), ((5, 7), "none", None),
               ((2, 3, 11), "mean", None), ((6, 10), "mean", "some-ignored"), ((6, 10), "none", "some-ignored"),
               ((4, 10), "mean", "all-ignored"), ((6, 10), "mean", "ignore_index=3"), ((8, 1025), "mean", None))
    for shape, reduction, ignore in configs:
        for values in ("normal", "large") if shape == (5, 7) and reduction == "mean" else ("normal",):
            def build(rng, shape=shape, reduction=reduction, ignore=ignore, values=values):
                v = Values(rng, dtype)
                big = _large(dtype)
                logits = v.uniform(shape, -big, big) if values == "large" else v.normal(shape, 2.0)
                targets = rng.integers(0, shape[-1], shape[:-1]).astype(np.int64)
                attrs = {"reduction": reduction}
                if ignore == "some-ignored":
                    targets.reshape(-1)[::3] = -100
                elif ignore == "all-ignored":
                    targets[...] = -100                                        # 'mean' is 0/0 = NaN
                elif ignore == "ignore_index=3":
                    targets.reshape(-1)[::2] = 3
                    attrs["ignore_index"] = 3
                tdt = np.int32 if shape == (2, 3, 11) else np.int64
                return (logits, targets.astype(tdt)), attrs
            yield Spec(_label(logits=shape, reduction=reduction, targets=ignore,
                              values=values if values != "normal" else None),
                       build, quick=shape[-1] < 1025, layouts=shape == (5, 7) and reduction == "none")
