"""VJP bodies for the op declarations in `accel/ops/` (each op names its rule with `vjp=`).

Signature: `rule(g, out, *inputs, **attrs) -> tuple` with one gradient per input (a list for a
variadic input, None where there is none). Rules are written in accel ops so they run on every
backend and trace under compile. Gradients have the input's shape (broadcast dims sum-reduced,
`unbroadcast`) and dtype. A rule skips inputs whose `requires_grad` is off (constants such as
the scalar in `x * 2.0` or rope's cos/sin tables): the tape sets it on everything it tracks.

Low-precision inputs are differentiated in float32 and rounded once, as the forward
decompositions do.
"""
from __future__ import annotations

import math

from accel.core import dtypes as dt
from accel import ops as _ops  # the package is still importing when the op modules load us
from accel.core.tensor import Tensor


def needs(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


def unbroadcast(g: Tensor, shape) -> Tensor:
    """Sum g over the dims that broadcasting added or stretched, to get back to `shape`."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if axes:
        g = _ops.sum(g, axes, True)
    return _ops.reshape(g, shape)


def _up(x: Tensor) -> Tensor:
    return _ops.cast(x, dt.float32) if x.dtype in dt.LOW_PRECISION else x


def _as(g: Tensor, like: Tensor) -> Tensor:
    return g if g.dtype is like.dtype else _ops.cast(g, like.dtype)


def _float_mask(cond: Tensor, like: Tensor) -> Tensor:
    return _ops.cast(cond, like.dtype)


def _keep_shape(shape, axis) -> tuple[int, ...]:
    """The reduced shape with keepdims=True for a reduction over `axis` (None: all)."""
    if axis is None:
        return (1,) * len(shape)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = {a % len(shape) for a in axes} if shape else set()
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


# --- elementwise ----------------------------------------------------------------------------
def neg(g, out, x):
    return (_ops.neg(g),)


def exp(g, out, x):
    return (_ops.mul(g, out),)


def log(g, out, x):
    return (_ops.div(g, x),)


def sqrt(g, out, x):
    return (_ops.div(g, _ops.mul(out, 2.0)),)


def rsqrt(g, out, x):
    # d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 out^3
    return (_ops.mul(_ops.mul(g, -0.5), _ops.mul(out, _ops.mul(out, out))),)


def sin(g, out, x):
    return (_ops.mul(g, _ops.cos(x)),)


def cos(g, out, x):
    return (_ops.neg(_ops.mul(g, _ops.sin(x))),)


def tanh(g, out, x):
    return (_ops.mul(g, _ops.sub(1.0, _ops.mul(out, out))),)


def erf(g, out, x):
    return (_ops.mul(g, _ops.mul(_ops.exp(_ops.neg(_ops.mul(x, x))), 2.0 / math.sqrt(math.pi))),)


def abs(g, out, x):
    sign = _ops.sub(_float_mask(_ops.gt(x, 0.0), x), _float_mask(_ops.lt(x, 0.0), x))
    return (_ops.mul(g, sign),)  # 0 at x == 0, as torch and jax


def add(g, out, x, y):
    return (unbroadcast(g, x.shape) if needs(x) else None,
            unbroadcast(g, y.shape) if needs(y) else None)


def sub(g, out, x, y):
    return (unbroadcast(g, x.shape) if needs(x) else None,
            unbroadcast(_ops.neg(g), y.shape) if needs(y) else None)


def mul(g, out, x, y):
    return (unbroadcast(_ops.mul(g, y), x.shape) if needs(x) else None,
            unbroadcast(_ops.mul(g, x), y.shape) if needs(y) else None)


def div(g, out, x, y):
    gx = _ops.div(g, y)
    return (unbroadcast(gx, x.shape) if needs(x) else None,
            unbroadcast(_ops.neg(_ops.mul(gx, out)), y.shape) if needs(y) else None)


def pow(g, out, x, y):
    gx = gy = None
    if needs(x):
        gx = unbroadcast(_ops.mul(g, _ops.mul(y, _ops.pow(x, _ops.sub(y, 1.0)))), x.shape)
    if needs(y):
        # d/dy x^y = x^y log x; 0 where x == 0 (as torch), NaN for a negative base.
        safe_log = _ops.log(_ops.where(_ops.eq(x, 0.0), 1.0, x))
        gy = unbroadcast(_ops.mul(g, _ops.mul(out, safe_log)), y.shape)
    return gx, gy


def _select_vjp(g, x, y, first_wins):
    # Ties split the gradient evenly (torch and jax do the same for maximum/minimum).
    share = _ops.add(_float_mask(first_wins, g), _ops.mul(_float_mask(_ops.eq(x, y), g), 0.5))
    return (unbroadcast(_ops.mul(g, share), x.shape) if needs(x) else None,
            unbroadcast(_ops.mul(g, _ops.sub(1.0, share)), y.shape) if needs(y) else None)


def maximum(g, out, x, y):
    return _select_vjp(g, x, y, _ops.gt(x, y))


def minimum(g, out, x, y):
    return _select_vjp(g, x, y, _ops.lt(x, y))


def where(g, out, cond, x, y):
    return (None,
            unbroadcast(_ops.where(cond, g, 0.0), x.shape) if needs(x) else None,
            unbroadcast(_ops.where(cond, 0.0, g), y.shape) if needs(y) else None)


def cast(g, out, x, *, dtype, saturate=False):
    return (_as(g, x) if x.dtype.is_floating else None,)


# --- linear algebra and reductions ----------------------------------------------------------
def matmul(g, out, a, b):
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


def sum(g, out, x, *, axis=None, keepdims=False):
    return (_ops.broadcast_to(_ops.reshape(g, _keep_shape(x.shape, axis)), x.shape),)


def mean(g, out, x, *, axis=None, keepdims=False):
    count = _count(x.shape, axis)
    scaled = _ops.mul(_ops.reshape(g, _keep_shape(x.shape, axis)), 1.0 / count if count else 0.0)
    return (_ops.broadcast_to(scaled, x.shape),)


def _count(shape, axis) -> int:
    if axis is None:
        axes = range(len(shape))
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def max(g, out, x, *, axis=None, keepdims=False):
    keep = _keep_shape(x.shape, axis)
    hit = _float_mask(_ops.eq(x, _ops.reshape(out, keep)), g)  # ties share the gradient evenly
    count = _ops.sum(hit, axis, True)
    return (_ops.mul(hit, _ops.div(_ops.reshape(g, keep), count)),)


# --- movement -------------------------------------------------------------------------------
def reshape(g, out, x, *, shape):
    return (_ops.reshape(g, x.shape),)


def permute(g, out, x, *, axes):
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return (_ops.permute(g, tuple(inverse)),)


def broadcast_to(g, out, x, *, shape):
    return (unbroadcast(g, x.shape),)


def concat(g, out, xs, *, axis=0):
    grads, start = [], 0
    for x in xs:
        size = x.shape[axis]
        grads.append(_ops.slice(g, (axis,), (start,), (start + size,)) if needs(x) else None)
        start += size
    return (grads,)


def slice(g, out, x, *, axes, starts, stops, steps=None):
    """Scatter g back into zeros, one sliced axis at a time (index_copy is a primitive)."""
    steps = steps if steps is not None else (1,) * len(axes)
    for a, start, stop, step in zip(axes, starts, stops, steps):
        a = a % x.ndim
        if (start, stop, step) == (0, x.shape[a], 1):
            continue
        shape = list(g.shape)
        shape[a] = x.shape[a]
        index = _ops.arange(start, stop, step, backend=g.backend)
        g = _ops.index_copy(_ops.zeros(tuple(shape), g.dtype, g.backend), index, g, a)
    return (g,)


def _scatter_add_rows(g2: Tensor, index: Tensor, n: int) -> Tensor:
    """sum over i of onehot(index[i]) ⊗ g2[..., i, :]: (P, M, Q) and (M,) -> (P, n, Q).

    Gather's gradient adds rows that share an index; without a scatter-add primitive a one-hot
    matmul does it with ops every backend has (and that accelerators run fast).
    """
    classes = _ops.arange(n, dtype=index.dtype, backend=g2.backend)
    onehot = _ops.cast(_ops.eq(_ops.reshape(index, (-1, 1)), classes), g2.dtype)   # (M, n)
    return _ops.matmul(_ops.transpose(onehot, 0, 1), g2)                             # (P, n, Q)


def gather(g, out, x, indices, *, axis=0):
    axis = axis % x.ndim
    pre = 1
    for d in x.shape[:axis]:
        pre *= d
    post = 1
    for d in x.shape[axis + 1:]:
        post *= d
    g2 = _ops.reshape(g, (pre, indices.size, post))
    gx = _scatter_add_rows(_up(g2), indices, x.shape[axis])
    return (_as(_ops.reshape(gx, x.shape), x), None)


def index_copy(g, out, x, index, values, *, axis=0):
    gx = gv = None
    if needs(x):  # overwritten entries get no gradient
        gx = _ops.index_copy(g, index, _ops.zeros(values.shape, g.dtype, g.backend), axis)
    if needs(values):
        gv = _ops.gather(g, index, axis)
    return gx, None, gv


# --- composites -----------------------------------------------------------------------------
def softmax(g, out, x, *, axis=-1):
    s, gu = _up(out), _up(g)
    return (_as(_ops.mul(s, _ops.sub(gu, _ops.sum(_ops.mul(gu, s), axis, True))), x),)


def log_softmax(g, out, x, *, axis=-1):
    gu = _up(g)
    return (_as(_ops.sub(gu, _ops.mul(_ops.exp(_up(out)), _ops.sum(gu, axis, True))), x),)


def silu(g, out, x):
    xf = _up(x)
    s = _ops.div(1.0, _ops.add(_ops.exp(_ops.neg(xf)), 1.0))
    # d/dx x*s(x) = s + x*s*(1-s)
    local = _ops.mul(s, _ops.add(_ops.mul(xf, _ops.sub(1.0, s)), 1.0))
    return (_as(_ops.mul(_up(g), local), x),)


def rms_norm(g, out, x, weight=None, *, eps=1e-6):
    xf, gu = _up(x), _up(g)
    r = _ops.rsqrt(_ops.add(_ops.mean(_ops.mul(xf, xf), -1, True), eps))
    xhat = _ops.mul(xf, r)
    gw = None
    if weight is not None and needs(weight):
        # forward rounds xhat to x's dtype before scaling (as HF Llama)
        xhat_rounded = _up(_as(xhat, x))
        lead = tuple(range(x.ndim - 1))
        prod = _ops.mul(gu, xhat_rounded)
        gw = _as(_ops.sum(prod, lead) if lead else prod, weight)
    gx = None
    if needs(x):
        gy = gu if weight is None else _ops.mul(gu, _up(weight))
        inner = _ops.mean(_ops.mul(gy, xhat), -1, True)
        gx = _as(_ops.mul(r, _ops.sub(gy, _ops.mul(xhat, inner))), x)
    return gx, gw


def _rotate(x: Tensor, sign_first: float) -> Tensor:
    half = x.shape[-1] // 2
    last = x.ndim - 1
    x1 = _ops.slice(x, (last,), (0,), (half,))
    x2 = _ops.slice(x, (last,), (half,), (2 * half,))
    if sign_first < 0:
        return _ops.concat([_ops.neg(x2), x1], -1)   # rotate_half
    return _ops.concat([x2, _ops.neg(x1)], -1)       # its transpose


def rope(g, out, x, cos, sin):
    gx = gc = gs = None
    if needs(x):
        gx = _ops.add(_ops.mul(g, cos), _rotate(_ops.mul(g, sin), +1.0))
    if needs(cos):
        gc = unbroadcast(_ops.mul(g, x), cos.shape)
    if needs(sin):
        gs = unbroadcast(_ops.mul(g, _rotate(x, -1.0)), sin.shape)
    return gx, gc, gs


def linear(g, out, x, weight, bias=None):
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


def embedding(g, out, weight, ids):
    dim = weight.shape[1]
    g2 = _ops.reshape(_up(g), (1, -1, dim))                                         # (1, N, D)
    gw = _ops.reshape(_scatter_add_rows(g2, ids, weight.shape[0]), weight.shape)   # (V, D)
    return _as(gw, weight), None


def cross_entropy(g, out, logits, targets, *, ignore_index=-100, reduction="mean"):
    lf = _up(logits)
    probs = _ops.softmax(lf, -1)
    classes = _ops.arange(logits.shape[-1], dtype=targets.dtype, backend=logits.backend)
    onehot = _ops.cast(_ops.eq(_ops.unsqueeze(targets, -1), classes), lf.dtype)    # (..., C)
    valid = _ops.cast(_ops.ne(targets, ignore_index), lf.dtype)                      # (...)
    gu = _up(g)
    if reduction == "mean":
        coef = _ops.mul(valid, _ops.div(gu, _ops.sum(valid)))
    else:  # 'sum' broadcasts the scalar cotangent, 'none' has one per target
        coef = _ops.mul(valid, gu)
    return _as(_ops.mul(_ops.sub(probs, onehot), _ops.unsqueeze(coef, -1)), logits), None


def attention(g, out, q, k, v, mask=None, *, causal=False, scale=None):
    """Recompute the attention weights P, then dV = Pᵀ dO, dS = P ∘ (dP − rowsum(dP ∘ P)),
    dQ = dS K · scale, dK = dSᵀ Q · scale, with the query groups of GQA folded as in forward."""
    b, hq, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    dv = v.shape[3]
    groups = hq // hk
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qf, kf, vf = _up(q), _up(k), _up(v)
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
    go5 = _ops.reshape(_up(g), (b, hk, groups * t, dv))                               # (B, Hkv, G*T, Dv)
    gq = gk = gv = None
    if needs(v):
        gv = _as(_ops.matmul(_ops.transpose(p5, -1, -2), go5), v)                     # (B, Hkv, S, Dv)
    if needs(q) or needs(k):
        dp = _ops.matmul(go5, _ops.transpose(vf, -1, -2))                             # (B, Hkv, G*T, S)
        ds = _ops.mul(p5, _ops.sub(dp, _ops.sum(_ops.mul(dp, p5), -1, True)))
        if needs(q):
            gq = _as(_ops.reshape(_ops.mul(_ops.matmul(ds, kf), scale), (b, hq, t, d)), q)
        if needs(k):
            gk = _as(_ops.mul(_ops.matmul(_ops.transpose(ds, -1, -2), q5), scale), k)  # (B, Hkv, S, D)
    return gq, gk, gv, None
