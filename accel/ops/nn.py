"""Composite ops for transformers. Each has a reference decomposition into primitives (what runs
unless a backend registers a fused kernel) and an independent numpy float64 reference.

Low-precision inputs (float16, bfloat16, float8) are computed in float32 inside the
decomposition and rounded once at the end, as fused kernels on real hardware do.
"""
from __future__ import annotations

import math

import numpy as np

from accel.core import dtypes as dt
from accel.core.bounds import TARGET_HINT, check_host_indices, check_host_targets
from accel.core.errors import DTypeError, IndexOutOfRangeError, ShapeError
from accel import ops as _ops  # the package is still importing: used at call time
from accel.ops._vjp_helpers import like, needs, scatter_add_rows, unbroadcast, up
from accel.core.op import COMPOSITE, Op
from accel.ops._rules import (
    broadcast_shapes, normalize_axis, prepare_float_unary, require_float, require_same_dtype, spec,
)
from accel.ops.creation import arange
from accel.ops.elementwise import (
    add, cast, div, eq, erf, exp, ge, log, logical_and, mul, ne, neg, rsqrt, sub, tanh, where,
)
from accel.ops.indexing import gather
from accel.ops.linalg import matmul
from accel.ops.movement import broadcast_to, concat, reshape, slice, transpose, unsqueeze
from accel.ops.reduction import max, mean, sum

FLOATS = dt.FLOAT_DTYPES


def _down(y, dtype):
    return y if y.dtype is dtype else cast(y, dtype)


def _same_as_input(x, **_):
    require_float(x)
    return spec(x.shape, x.dtype)


def _axis_same_as_input(x, *, axis=-1):
    require_float(x)
    normalize_axis(axis, x.ndim)
    return spec(x.shape, x.dtype)


def _with_rule(prepare, infer):
    """`prepare`, then the op's shape/dtype rule, in plain eager mode too: a fused kernel would
    otherwise take what the declaration refuses (a float mask, k and v of other lengths, an odd
    rope dim). A signature (shapes, dtypes, attrs) that passed is remembered, so a decode loop
    pays a dict lookup per call rather than the whole rule (docs/errors.md has the figures)."""
    passed: set = set()

    def prepare_and_check(args, attrs):
        if prepare is not None:
            args, attrs = prepare(args, attrs)
        try:
            # the native arrays' own shape and dtype: cheaper to read than the Tensor properties
            key = (*[a if a is None else (a.data.shape, a.data.dtype) for a in args], *attrs.items())
            if key in passed:
                return args, attrs
        except (TypeError, AttributeError):  # an unhashable attr, a traced value: check each time
            key = None
        infer(*args, **attrs)
        if key is not None:
            if len(passed) >= _PASSED_LIMIT:
                passed.clear()
            passed.add(key)
        return args, attrs
    return prepare_and_check


_PASSED_LIMIT = 4096  # signatures remembered per op (a model has a handful per layer)


def _prepare_axis(args, attrs):
    args, attrs = prepare_float_unary(args, attrs)
    axis, ndim = attrs["axis"], args[0].ndim
    if type(axis) is int and -ndim <= axis < ndim:  # copy only to make the axis >= 0
        return args, (attrs if axis >= 0 else {**attrs, "axis": axis + ndim})
    return args, {**attrs, "axis": normalize_axis(axis, ndim)}


# --- softmax family -------------------------------------------------------------------------
def _softmax_decomposition(x, axis=-1):
    xf = up(x)
    shifted = sub(xf, max(xf, axis, True))
    e = exp(shifted)
    return _down(div(e, sum(e, axis, True)), x.dtype)


def _log_softmax_decomposition(x, axis=-1):
    xf = up(x)
    shifted = sub(xf, max(xf, axis, True))
    return _down(sub(shifted, log(sum(exp(shifted), axis, True))), x.dtype)


def softmax_reference(x, *, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax_reference(x, *, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


softmax = Op("softmax", kind=COMPOSITE, inputs=("x",), attrs={"axis": -1},
             infer=_axis_same_as_input, reference=softmax_reference,
             decompose=_softmax_decomposition, prepare=_with_rule(_prepare_axis, _axis_same_as_input),
             dtypes=FLOATS,
             accumulating=True, onnx="Softmax", cases={"family": "softmax"},
             doc="exp(x) / sum(exp(x)) along `axis`, computed stably (max subtracted).")


@softmax.defvjp
def _softmax_vjp(g, out, x, *, axis=-1):
    s, gu = up(out), up(g)
    return (like(_ops.mul(s, _ops.sub(gu, _ops.sum(_ops.mul(gu, s), axis, True))), x),)


log_softmax = Op("log_softmax", kind=COMPOSITE, inputs=("x",), attrs={"axis": -1},
                 infer=_axis_same_as_input, reference=log_softmax_reference,
                 decompose=_log_softmax_decomposition,
                 prepare=_with_rule(_prepare_axis, _axis_same_as_input), dtypes=FLOATS,
                 accumulating=True, onnx="LogSoftmax", cases={"family": "softmax"},
                 doc="log(softmax(x)) along `axis`, computed stably.")


@log_softmax.defvjp
def _log_softmax_vjp(g, out, x, *, axis=-1):
    gu = up(g)
    return (like(_ops.sub(gu, _ops.mul(_ops.exp(up(out)), _ops.sum(gu, axis, True))), x),)


# --- activations ----------------------------------------------------------------------------
def _silu_decomposition(x):
    xf = up(x)
    return _down(div(xf, add(exp(neg(xf)), 1.0)), x.dtype)


silu = Op("silu", kind=COMPOSITE, inputs=("x",), infer=_same_as_input,
          reference=lambda x: x / (1.0 + np.exp(-x)), decompose=_silu_decomposition,
          prepare=prepare_float_unary, dtypes=FLOATS, cases={"family": "unary", "domain": (-8.0, 8.0)},
          doc="x * sigmoid(x) (SiLU / swish), the Llama MLP activation.")


@silu.defvjp
def _silu_vjp(g, out, x):
    xf = up(x)
    s = _ops.div(1.0, _ops.add(_ops.exp(_ops.neg(xf)), 1.0))
    # d/dx x*s(x) = s + x*s*(1-s)
    local = _ops.mul(s, _ops.add(_ops.mul(xf, _ops.sub(1.0, s)), 1.0))
    return (like(_ops.mul(up(g), local), x),)


def _gelu_decomposition(x, approximate="none"):
    xf = up(x)
    if approximate == "tanh":
        inner = mul(add(xf, mul(mul(mul(xf, xf), xf), 0.044715)), math.sqrt(2.0 / math.pi))
        y = mul(mul(xf, 0.5), add(tanh(inner), 1.0))
    else:
        y = mul(mul(xf, 0.5), add(erf(mul(xf, 1.0 / math.sqrt(2.0))), 1.0))
    return _down(y, x.dtype)


def gelu_reference(x, *, approximate="none"):
    x = np.asarray(x, np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def _prepare_gelu(args, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        raise DTypeError(f"gelu approximate must be 'none' or 'tanh', got {attrs['approximate']!r}",
                         hint="use approximate='none' (erf) or 'tanh'")
    return prepare_float_unary(args, attrs)


gelu = Op("gelu", kind=COMPOSITE, inputs=("x",), attrs={"approximate": "none"},
          infer=_same_as_input, reference=gelu_reference, decompose=_gelu_decomposition,
          prepare=_prepare_gelu, dtypes=FLOATS, onnx="Gelu",
          cases={"family": "unary", "domain": (-6.0, 6.0), "attrs": [{"approximate": "none"}, {"approximate": "tanh"}]},
          doc="GELU: x * Phi(x) (approximate='none', via erf) or the tanh approximation.")


# --- norms ----------------------------------------------------------------------------------
def _norm_infer(x, weight=None, bias=None, *, eps=1e-6):
    require_float(x)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        if p.dtype is not x.dtype:
            raise DTypeError(f"{name} dtype {p.dtype.name} differs from input dtype {x.dtype.name}",
                             hint=f"cast {name} to {x.dtype.name}")
        if tuple(p.shape) != tuple(x.shape[-1:]):
            raise ShapeError(f"{name} shape {list(p.shape)} must be [{x.shape[-1] if x.ndim else ''}] "
                             f"(the last dim of the input {list(x.shape)})",
                             hint="norms normalise over the last axis only")
    return spec(x.shape, x.dtype)


def _rms_norm_decomposition(x, weight=None, eps=1e-6):
    xf = up(x)
    y = mul(xf, rsqrt(add(mean(mul(xf, xf), -1, True), eps)))
    y = _down(y, x.dtype)  # as Hugging Face Llama: normalise in float32, round, then scale
    return y if weight is None else mul(y, weight)


def rms_norm_reference(x, weight=None, *, eps=1e-6):
    x = np.asarray(x, np.float64)
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


rms_norm = Op("rms_norm", kind=COMPOSITE, inputs=("x", "weight"), attrs={"eps": 1e-6}, optional=("weight",),
              infer=_norm_infer, reference=rms_norm_reference, decompose=_rms_norm_decomposition,
              prepare=_with_rule(prepare_float_unary, _norm_infer), dtypes=FLOATS, accumulating=True,
              onnx="RMSNormalization", cases={"family": "norm", "bias": False},
              doc="x / sqrt(mean(x², last axis) + eps) * weight (weight may be None).")


@rms_norm.defvjp
def _rms_norm_vjp(g, out, x, weight=None, *, eps=1e-6):
    xf, gu = up(x), up(g)
    r = _ops.rsqrt(_ops.add(_ops.mean(_ops.mul(xf, xf), -1, True), eps))
    xhat = _ops.mul(xf, r)
    gw = None
    if weight is not None and needs(weight):
        # forward rounds xhat to x's dtype before scaling (as HF Llama)
        xhat_rounded = up(like(xhat, x))
        lead = tuple(range(x.ndim - 1))
        prod = _ops.mul(gu, xhat_rounded)
        gw = like(_ops.sum(prod, lead) if lead else prod, weight)
    gx = None
    if needs(x):
        gy = gu if weight is None else _ops.mul(gu, up(weight))
        inner = _ops.mean(_ops.mul(gy, xhat), -1, True)
        gx = like(_ops.mul(r, _ops.sub(gy, _ops.mul(xhat, inner))), x)
    return gx, gw


def _layer_norm_decomposition(x, weight=None, bias=None, eps=1e-5):
    xf = up(x)
    centered = sub(xf, mean(xf, -1, True))
    y = mul(centered, rsqrt(add(mean(mul(centered, centered), -1, True), eps)))
    y = _down(y, x.dtype)
    if weight is not None:
        y = mul(y, weight)
    if bias is not None:
        y = add(y, bias)
    return y


def layer_norm_reference(x, weight=None, bias=None, *, eps=1e-5):
    x = np.asarray(x, np.float64)
    c = x - np.mean(x, axis=-1, keepdims=True)
    y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


layer_norm = Op("layer_norm", kind=COMPOSITE, inputs=("x", "weight", "bias"), attrs={"eps": 1e-5},
                optional=("weight", "bias"),
                infer=_norm_infer, reference=layer_norm_reference,
                decompose=_layer_norm_decomposition, prepare=_with_rule(prepare_float_unary, _norm_infer),
                dtypes=FLOATS,
                accumulating=True, onnx="LayerNormalization", cases={"family": "norm", "bias": True},
                doc="(x - mean) / sqrt(var + eps) * weight + bias over the last axis.")


# --- rotary position embedding --------------------------------------------------------------
def _rope_infer(x, cos, sin):
    require_float(x)
    require_same_dtype(x, cos, sin)
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ShapeError(f"rope needs an even last dim, got {list(x.shape)}",
                         hint="the head dim must be even")
    out = broadcast_shapes(x.shape, cos.shape, sin.shape)
    if tuple(out) != tuple(x.shape):
        raise ShapeError(f"cos {list(cos.shape)} / sin {list(sin.shape)} do not broadcast to x {list(x.shape)}",
                         hint="cos and sin are (T, D) or (B, 1, T, D) for x of shape (B, H, T, D)")
    return spec(x.shape, x.dtype)


def _rope_decomposition(x, cos, sin):
    # float32 inside, one rounding at the end: x*cos + rot*sin cancels, and three low-precision
    # roundings made fp16 results miss rtol 1e-3 (found by conformance).
    xf, cos, sin = up(x), up(cos), up(sin)
    half = x.shape[-1] // 2
    last = x.ndim - 1
    x1 = slice(xf, (last,), (0,), (half,))
    x2 = slice(xf, (last,), (half,), (2 * half,))
    rotated = concat([neg(x2), x1], -1)
    return _down(add(mul(xf, cos), mul(rotated, sin)), x.dtype)


def rope_reference(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


rope = Op("rope", kind=COMPOSITE, inputs=("x", "cos", "sin"), infer=_rope_infer,
          reference=rope_reference, decompose=_rope_decomposition, prepare=_with_rule(prepare_float_unary, _rope_infer),
          dtypes=FLOATS, onnx="RotaryEmbedding", cases={"family": "rope"},
          doc="""Rotary position embedding, "rotate half" convention (Hugging Face Llama):
          x * cos + rotate_half(x) * sin, with rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2]).
          cos/sin hold the per-position angles, already duplicated to the full head dim.""")


def _rotate(x: Tensor, sign_first: float) -> Tensor:
    half = x.shape[-1] // 2
    last = x.ndim - 1
    x1 = _ops.slice(x, (last,), (0,), (half,))
    x2 = _ops.slice(x, (last,), (half,), (2 * half,))
    if sign_first < 0:
        return _ops.concat([_ops.neg(x2), x1], -1)   # rotate_half
    return _ops.concat([x2, _ops.neg(x1)], -1)       # its transpose


@rope.defvjp
def _rope_vjp(g, out, x, cos, sin):
    gx = gc = gs = None
    if needs(x):
        gx = _ops.add(_ops.mul(g, cos), _rotate(_ops.mul(g, sin), +1.0))
    if needs(cos):
        gc = unbroadcast(_ops.mul(g, x), cos.shape)
    if needs(sin):
        gs = unbroadcast(_ops.mul(g, _rotate(x, -1.0)), sin.shape)
    return gx, gc, gs


# --- attention ------------------------------------------------------------------------------
def _attention_infer(q, k, v, mask=None, *, causal=False, scale=None):
    require_float(q)
    require_same_dtype(q, k, v)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ShapeError(f"attention takes (B, H, T, D) tensors, got q {list(q.shape)}, "
                         f"k {list(k.shape)}, v {list(v.shape)}",
                         hint="reshape to (batch, heads, tokens, head_dim)")
    b, hq, t, d = q.shape
    bk, hk, s, dk = k.shape
    if (bk, hk, s) != tuple(v.shape[:3]) or bk != b or dk != d:
        raise ShapeError(f"q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} do not match",
                         hint="k and v share (B, H_kv, S); q and k share B and the head dim")
    if hk == 0 or hq % hk:
        raise ShapeError(f"{hq} query heads are not a multiple of {hk} key/value heads",
                         hint="grouped-query attention needs H_q % H_kv == 0")
    if mask is not None:
        if mask.dtype is not dt.bool_:
            raise DTypeError(f"mask must be bool (True = attend), got {mask.dtype.name}",
                             hint="build it with comparisons, e.g. key_pos <= query_pos")
        try:
            if broadcast_shapes(mask.shape, (b, hq, t, s)) != (b, hq, t, s):
                raise ShapeError("")
        except ShapeError:
            raise ShapeError(f"mask {list(mask.shape)} does not broadcast to (B, H, T, S) = {[b, hq, t, s]}",
                             hint="use a (T, S), (B, 1, T, S) or (B, H, T, S) bool mask") from None
    return spec((b, hq, t, v.shape[3]), q.dtype)


def _attention_decomposition(q, k, v, mask=None, causal=False, scale=None):
    b, hq, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    groups = hq // hk
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qf, kf, vf = up(q), up(k), up(v)
    # Grouped-query attention without copying K/V: fold the query groups into their own axis.
    q5 = reshape(qf, (b, hk, groups * t, d))                                  # (B, Hkv, G*T, D)
    scores = mul(matmul(q5, transpose(kf, -1, -2)), scale)                    # (B, Hkv, G*T, S)
    scores = reshape(scores, (b, hq, t, s))                                   # (B, Hq, T, S)
    allowed = None
    if mask is not None:
        allowed = broadcast_to(mask, (b, hq, t, s))
    if causal:
        rows = reshape(arange(t, backend=q.backend), (t, 1))
        cols = reshape(arange(s, backend=q.backend), (1, s))
        tri = broadcast_to(ge(rows, cols), (b, hq, t, s))
        allowed = tri if allowed is None else logical_and(allowed, tri)
    if allowed is not None:
        scores = where(allowed, scores, float("-inf"))
    # Fully masked rows give zeros (not NaN): shift by 0 there, and divide by 1 instead of 0.
    row_max = max(scores, -1, True)
    row_max = where(eq(row_max, float("-inf")), 0.0, row_max)
    weights = exp(sub(scores, row_max))
    denom = sum(weights, -1, True)
    weights = div(weights, where(eq(denom, 0.0), 1.0, denom))
    weights = reshape(weights, (b, hk, groups * t, s))
    out = reshape(matmul(weights, vf), (b, hq, t, v.shape[3]))                # (B, Hq, T, Dv)
    return _down(out, q.dtype)


def attention_reference(q, k, v, mask=None, *, causal=False, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, hq, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    k = np.repeat(k, hq // hk, axis=1)
    v = np.repeat(v, hq // hk, axis=1)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    allowed = np.ones((b, hq, t, s), bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask, (b, hq, t, s))
    if causal:
        allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None]
    scores = np.where(allowed, scores, -np.inf)
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isneginf(row_max), 0.0, row_max)
    w = np.exp(scores - row_max)
    denom = np.sum(w, axis=-1, keepdims=True)
    return (w / np.where(denom == 0, 1.0, denom)) @ v


attention = Op(
    "attention", kind=COMPOSITE, inputs=("q", "k", "v", "mask"), optional=("mask",),
    attrs={"causal": False, "scale": None}, infer=_attention_infer, reference=attention_reference,
    decompose=_attention_decomposition, prepare=_with_rule(prepare_float_unary, _attention_infer), dtypes=FLOATS,
    accumulating=True, onnx="Attention", cases={"family": "attention"},
    doc="""Scaled dot-product attention with grouped-query heads.

    q (B, Hq, T, D); k, v (B, Hkv, S, D) with Hq % Hkv == 0; mask: optional bool, broadcastable
    to (B, Hq, T, S), True = attend. causal=True additionally lets query i see keys j <= i
    (top-left aligned, as torch's is_causal); with a static KV cache pass an explicit mask built
    from positions instead. scale defaults to 1/sqrt(D). A fully masked row outputs zeros.""",
)


@attention.defvjp
def _attention_vjp(g, out, q, k, v, mask=None, *, causal=False, scale=None):
    """Recompute the attention weights P, then dV = Pᵀ dO, dS = P ∘ (dP − rowsum(dP ∘ P)),
    dQ = dS K · scale, dK = dSᵀ Q · scale, with the query groups of GQA folded as in forward."""
    b, hq, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    dv = v.shape[3]
    groups = hq // hk
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qf, kf, vf = up(q), up(k), up(v)
    q5 = _ops.reshape(qf, (b, hk, groups * t, d))                                     # (B, Hkv, G*T, D)
    scores = _ops.reshape(_ops.mul(_ops.matmul(q5, _ops.transpose(kf, -1, -2)), scale), (b, hq, t, s))
    allowed = None
    if mask is not None:
        allowed = _ops.broadcast_to(mask, (b, hq, t, s))
    if causal:
        rows = _ops.reshape(_ops.arange(t, backend=q.backend), (t, 1))
        cols = _ops.reshape(_ops.arange(s, backend=q.backend), (1, s))
        tri = _ops.broadcast_to(_ops.ge(rows, cols), (b, hq, t, s))
        allowed = tri if allowed is None else _ops.logical_and(allowed, tri)
    if allowed is not None:
        scores = _ops.where(allowed, scores, float("-inf"))
    row_max = _ops.max(scores, -1, True)
    row_max = _ops.where(_ops.eq(row_max, float("-inf")), 0.0, row_max)
    weights = _ops.exp(_ops.sub(scores, row_max))
    denom = _ops.sum(weights, -1, True)
    p5 = _ops.reshape(_ops.div(weights, _ops.where(_ops.eq(denom, 0.0), 1.0, denom)),
                      (b, hk, groups * t, s))                                          # (B, Hkv, G*T, S)
    go5 = _ops.reshape(up(g), (b, hk, groups * t, dv))                               # (B, Hkv, G*T, Dv)
    gq = gk = gv = None
    if needs(v):
        gv = like(_ops.matmul(_ops.transpose(p5, -1, -2), go5), v)                     # (B, Hkv, S, Dv)
    if needs(q) or needs(k):
        dp = _ops.matmul(go5, _ops.transpose(vf, -1, -2))                             # (B, Hkv, G*T, S)
        ds = _ops.mul(p5, _ops.sub(dp, _ops.sum(_ops.mul(dp, p5), -1, True)))
        if needs(q):
            gq = like(_ops.reshape(_ops.mul(_ops.matmul(ds, kf), scale), (b, hq, t, d)), q)
        if needs(k):
            gk = like(_ops.mul(_ops.matmul(_ops.transpose(ds, -1, -2), q5), scale), k)  # (B, Hkv, S, D)
    return gq, gk, gv, None


# --- embedding, linear, cross-entropy -------------------------------------------------------
def _embedding_infer(weight, ids):
    if weight.ndim != 2:
        raise ShapeError(f"embedding weight must be (vocab, dim), got {list(weight.shape)}",
                         hint="pass the 2-d embedding table")
    if ids.dtype not in (dt.int32, dt.int64):
        raise DTypeError(f"token ids must be int32 or int64, got {ids.dtype.name}",
                         hint="cast the ids to int64")
    return spec(tuple(ids.shape) + (weight.shape[1],), weight.dtype)


def embedding_reference(weight, ids):
    check_host_indices(np.asarray(ids), np.shape(weight)[0], axis=0)
    return np.take(weight, ids, axis=0)


embedding = Op("embedding", kind=COMPOSITE, inputs=("weight", "ids"), infer=_embedding_infer,
               reference=embedding_reference, prepare=_with_rule(None, _embedding_infer),
               decompose=lambda weight, ids: gather(weight, ids, 0), dtypes=FLOATS, exact=True,
               onnx="Gather", cases={"family": "embedding"},
               doc="Rows of `weight` (vocab, dim) at integer `ids`: output ids.shape + (dim,).")


@embedding.defvjp
def _embedding_vjp(g, out, weight, ids):
    dim = weight.shape[1]
    g2 = _ops.reshape(up(g), (1, -1, dim))                                         # (1, N, D)
    gw = _ops.reshape(scatter_add_rows(g2, ids, weight.shape[0]), weight.shape)   # (V, D)
    return like(gw, weight), None


def _linear_infer(x, weight, bias=None):
    require_float(x)
    require_same_dtype(x, weight, bias)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: x {list(x.shape)} does not fit weight {list(weight.shape)} "
                         f"(weight is (out_features, in_features))",
                         hint="x's last dim must equal weight.shape[1]; Hugging Face stores weight as (out, in)")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"bias shape {list(bias.shape)} must be [{weight.shape[0]}]",
                         hint="one bias per output feature")
    return spec(tuple(x.shape[:-1]) + (weight.shape[0],), x.dtype)


def _linear_decomposition(x, weight, bias=None):
    y = matmul(x, transpose(weight, 0, 1))
    return y if bias is None else add(y, bias)


linear = Op("linear", kind=COMPOSITE, inputs=("x", "weight", "bias"), optional=("bias",), infer=_linear_infer,
            reference=lambda x, weight, bias=None: x @ weight.T + (0.0 if bias is None else bias),
            decompose=_linear_decomposition, prepare=_with_rule(prepare_float_unary, _linear_infer), dtypes=FLOATS,
            accumulating=True, onnx="Gemm", cases={"family": "linear"},
            doc="x @ weight.T + bias, weight stored (out_features, in_features) as in torch/HF.")


@linear.defvjp
def _linear_vjp(g, out, x, weight, bias=None):
    n_out, n_in = weight.shape
    gx = gw = gb = None
    if needs(x):
        gx = _ops.matmul(g, weight)                                                 # (..., in)
    g2 = _ops.reshape(g, (-1, n_out))                                               # (N, out)
    if needs(weight):
        gw = _ops.matmul(_ops.transpose(g2, 0, 1), _ops.reshape(x, (-1, n_in)))   # (out, in)
    if bias is not None and needs(bias):
        gb = _ops.sum(g2, 0)
    return gx, gw, gb


def _cross_entropy_infer(logits, targets, *, ignore_index=-100, reduction="mean"):
    require_float(logits)
    if targets.dtype not in (dt.int32, dt.int64):
        raise DTypeError(f"targets must be int32 or int64 class indices, got {targets.dtype.name}",
                         hint="cast the targets to int64")
    if logits.ndim < 1 or tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"targets {list(targets.shape)} must equal logits {list(logits.shape)} "
                         f"without its last (class) dim", hint="logits are (..., C), targets (...)")
    if reduction not in ("mean", "sum", "none"):
        raise ShapeError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}",
                         hint="pick one of mean, sum, none")
    return spec(tuple(targets.shape) if reduction == "none" else (), logits.dtype)


def _cross_entropy_decomposition(logits, targets, ignore_index=-100, reduction="mean"):
    c = logits.shape[-1]
    logp = log_softmax(up(logits), -1)
    classes = arange(c, dtype=targets.dtype, backend=logits.backend)
    valid = ne(targets, ignore_index)
    # A target outside [0, C) would match no class and add nothing to the loss: reading it
    # through gather from the class ids (the same values) makes the index kernel check it.
    try:
        checked = gather(classes, where(valid, targets, 0), 0)                 # (...)
    except IndexOutOfRangeError as error:  # say it in the words of the op the user called
        found = str(error.args[0]).split("\n")[0].rsplit(": ", 1)[-1]
        raise IndexOutOfRangeError(
            f"cross_entropy on {logits.backend.spec}: a target is neither a class in [0, {c}) nor "
            f"ignore_index ({ignore_index}): {found}", hint=TARGET_HINT) from None
    hit = eq(unsqueeze(checked, -1), classes)                                  # (..., C)
    picked = sum(where(hit, logp, 0.0), -1)                                    # (...)
    losses = where(valid, neg(picked), 0.0)
    if reduction == "none":
        return _down(losses, logits.dtype)
    total = sum(losses)
    if reduction == "sum":
        return _down(total, logits.dtype)
    count = sum(cast(valid, total.dtype))
    return _down(div(total, count), logits.dtype)


def cross_entropy_reference(logits, targets, *, ignore_index=-100, reduction="mean"):
    logp = log_softmax_reference(logits, axis=-1)
    valid = targets != ignore_index
    check_host_targets(np.asarray(targets), np.shape(logits)[-1], ignore_index)
    safe = np.where(valid, targets, 0)
    picked = np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    losses = np.where(valid, -picked, 0.0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return np.sum(losses)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(losses) / np.sum(valid)


cross_entropy = Op(
    "cross_entropy", kind=COMPOSITE, inputs=("logits", "targets"),
    attrs={"ignore_index": -100, "reduction": "mean"}, infer=_cross_entropy_infer,
    reference=cross_entropy_reference, decompose=_cross_entropy_decomposition,
    prepare=_with_rule(prepare_float_unary, _cross_entropy_infer), dtypes=FLOATS, accumulating=True,
    onnx="SoftmaxCrossEntropyLoss", cases={"family": "cross_entropy"},
    doc="""Softmax cross-entropy of logits (..., C) against integer targets (...).

    Targets equal to ignore_index add nothing; 'mean' divides by the number of other targets
    (NaN when every target is ignored, as torch); any other target outside [0, C) raises
    IndexOutOfRangeError (eager mode, every backend). reduction: 'mean' | 'sum' | 'none'.""",
)


@cross_entropy.defvjp
def _cross_entropy_vjp(g, out, logits, targets, *, ignore_index=-100, reduction="mean"):
    lf = up(logits)
    probs = _ops.softmax(lf, -1)
    classes = _ops.arange(logits.shape[-1], dtype=targets.dtype, backend=logits.backend)
    onehot = _ops.cast(_ops.eq(_ops.unsqueeze(targets, -1), classes), lf.dtype)    # (..., C)
    valid = _ops.cast(_ops.ne(targets, ignore_index), lf.dtype)                      # (...)
    gu = up(g)
    if reduction == "mean":
        coef = _ops.mul(valid, _ops.div(gu, _ops.sum(valid)))
    else:  # 'sum' broadcasts the scalar cotangent, 'none' has one per target
        coef = _ops.mul(valid, gu)
    return like(_ops.mul(_ops.sub(probs, onehot), _ops.unsqueeze(coef, -1)), logits), None

