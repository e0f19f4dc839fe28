"""Every differentiable op's VJP against float64 central finite differences (numpy backend).

The analytic gradient runs on the backend under test (float64 where it has it); the oracle is
always finite differences on the reference backend, independent of the VJP code.
"""
from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import ops

from .gradcheck import as_tensors, finite_difference, scalar_loss

rng = np.random.default_rng(1234)


def normal(*shape):
    return rng.standard_normal(shape)


def positive(*shape):
    return rng.uniform(0.5, 2.0, shape)


def distinct(*shape):
    """Values with no ties (max/maximum/abs are not differentiable at ties or 0)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2.0 + 0.25).reshape(shape) * 0.3


CASES = [
    # (id, fn, inputs, ops covered)
    ("neg", lambda x: ops.neg(x), [normal(3, 4)], {"neg"}),
    ("exp", lambda x: ops.exp(x), [normal(3, 4)], {"exp"}),
    ("log", lambda x: ops.log(x), [positive(3, 4)], {"log"}),
    ("sqrt", lambda x: ops.sqrt(x), [positive(5)], {"sqrt"}),
    ("rsqrt", lambda x: ops.rsqrt(x), [positive(5)], {"rsqrt"}),
    ("sin", lambda x: ops.sin(x), [normal(7)], {"sin"}),
    ("cos", lambda x: ops.cos(x), [normal(7)], {"cos"}),
    ("tanh", lambda x: ops.tanh(x), [normal(7)], {"tanh"}),
    ("erf", lambda x: ops.erf(x), [normal(7)], {"erf"}),
    ("abs", lambda x: ops.abs(x), [distinct(2, 3)], {"abs"}),
    ("add-broadcast", lambda x, y: ops.add(x, y), [normal(3, 4), normal(3, 1)], {"add"}),
    ("add-scalar", lambda x: x + 2.5, [normal(3)], {"add"}),
    ("sub-broadcast", lambda x, y: ops.sub(x, y), [normal(4), normal(3, 4)], {"sub"}),
    ("mul-broadcast", lambda x, y: ops.mul(x, y), [normal(2, 3, 4), normal(1, 4)], {"mul"}),
    ("div-broadcast", lambda x, y: ops.div(x, y), [normal(3, 4), positive(4)], {"div"}),
    ("rdiv-scalar", lambda y: 1.5 / y, [positive(5)], {"div"}),
    ("pow", lambda x, y: ops.pow(x, y), [positive(3, 4), normal(1, 4)], {"pow"}),
    ("pow-scalar", lambda x: x ** 3.0, [normal(5)], {"pow"}),
    ("maximum", lambda x, y: ops.maximum(x, y), [distinct(3, 4), distinct(3, 1) + 0.1], {"maximum"}),
    ("minimum", lambda x, y: ops.minimum(x, y), [distinct(3, 4), distinct(4) + 0.1], {"minimum"}),
    ("where", lambda c, x, y: ops.where(c, x, y), [rng.random((3, 4)) > 0.5, normal(3, 4), normal(1, 4)], {"where"}),
    ("matmul", lambda a, b: ops.matmul(a, b), [normal(3, 4), normal(4, 5)], {"matmul"}),
    ("matmul-batch-broadcast", lambda a, b: ops.matmul(a, b), [normal(2, 1, 3, 4), normal(5, 4, 2)], {"matmul"}),
    ("matmul-vec-mat", lambda a, b: ops.matmul(a, b), [normal(4), normal(2, 4, 5)], {"matmul"}),
    ("matmul-mat-vec", lambda a, b: ops.matmul(a, b), [normal(2, 3, 4), normal(4)], {"matmul"}),
    ("matmul-vec-vec", lambda a, b: ops.matmul(a, b), [normal(4), normal(4)], {"matmul"}),
    ("sum-all", lambda x: ops.sum(x), [normal(3, 4)], {"sum"}),
    ("sum-axis", lambda x: ops.sum(x, 1), [normal(2, 3, 4)], {"sum"}),
    ("sum-axes-keepdims", lambda x: ops.sum(x, (0, 2), True), [normal(2, 3, 4)], {"sum"}),
    ("mean-axis", lambda x: ops.mean(x, -1), [normal(2, 3, 4)], {"mean"}),
    ("mean-all", lambda x: ops.mean(x), [normal(2, 3)], {"mean"}),
    ("max-axis", lambda x: ops.max(x, 0), [distinct(3, 4)], {"max"}),
    ("max-all-keepdims", lambda x: ops.max(x, None, True), [distinct(3, 4)], {"max"}),
    ("reshape", lambda x: ops.reshape(x, (4, -1)), [normal(2, 3, 4)], {"reshape"}),
    ("permute", lambda x: ops.permute(x, (2, 0, 1)), [normal(2, 3, 4)], {"permute"}),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)), [normal(3, 1)], {"broadcast_to"}),
    ("concat", lambda a, b, c: ops.concat([a, b, c], 1), [normal(2, 1), normal(2, 3), normal(2, 2)], {"concat"}),
    ("slice-steps", lambda x: ops.slice(x, (0, 1), (1, 0), (5, 4), (2, 3)), [normal(5, 4)], {"slice"}),
    ("getitem", lambda x: x[1:, None, ::2], [normal(3, 5)], {"slice", "reshape"}),
    ("gather-dup", lambda x, i: ops.gather(x, i, 1), [normal(2, 5, 3), np.array([[4, 0], [4, 4]])], {"gather"}),
    ("index_copy", lambda x, i, v: ops.index_copy(x, i, v, 1), [normal(2, 5), np.array([3, 0]), normal(2, 2)], {"index_copy"}),
    ("index_add", lambda x, i, v: ops.index_add(x, i, v, 1), [normal(2, 5), np.array([3, 0, 3]), normal(2, 3)], {"index_add"}),
    # to the input's own dtype: float64 on the reference, whatever the chip runs elsewhere
    ("cast-roundtrip", lambda x: ops.cast(ops.cast(x, x.dtype), x.dtype) * 3.0, [normal(3)], {"cast"}),
    ("softmax", lambda x: ops.softmax(x, -1), [normal(3, 5)], {"softmax"}),
    ("softmax-axis0", lambda x: ops.softmax(x, 0), [normal(3, 5)], {"softmax"}),
    ("log_softmax", lambda x: ops.log_softmax(x, -1), [normal(3, 5)], {"log_softmax"}),
    ("silu", lambda x: ops.silu(x), [normal(3, 4)], {"silu"}),
    ("gelu", lambda x: ops.gelu(x), [normal(3, 4)], {"gelu"}),
    ("gelu-tanh", lambda x: ops.gelu(x, "tanh"), [normal(3, 4)], {"gelu"}),
    ("rms_norm", lambda x, w: ops.rms_norm(x, w, 1e-5), [normal(2, 3, 5), normal(5)], {"rms_norm"}),
    ("rms_norm-noweight", lambda x: ops.rms_norm(x), [normal(3, 5)], {"rms_norm"}),
    ("layer_norm", lambda x, w, b: ops.layer_norm(x, w, b), [normal(3, 5), normal(5), normal(5)], {"layer_norm"}),
    ("rope", lambda x, c, s: ops.rope(x, c, s), [normal(1, 2, 3, 4), normal(3, 4), normal(3, 4)], {"rope"}),
    ("embedding-dup", lambda w, i: ops.embedding(w, i), [normal(6, 3), np.array([[1, 5, 1], [0, 1, 5]])], {"embedding"}),
    ("linear", lambda x, w, b: ops.linear(x, w, b), [normal(2, 3, 4), normal(5, 4), normal(5)], {"linear"}),
    ("linear-nobias", lambda x, w: ops.linear(x, w), [normal(3, 4), normal(2, 4)], {"linear"}),
    ("cross_entropy-mean", lambda z, t: ops.cross_entropy(z, t, -100), [normal(2, 3, 5), np.array([[1, -100, 4], [0, 2, 2]])], {"cross_entropy"}),
    ("cross_entropy-sum", lambda z, t: ops.cross_entropy(z, t, reduction="sum"), [normal(4, 5), np.array([1, 0, 4, 4])], {"cross_entropy"}),
    ("cross_entropy-none", lambda z, t: ops.cross_entropy(z, t, reduction="none"), [normal(4, 5), np.array([1, 0, 4, 4])], {"cross_entropy"}),
    ("attention-causal-gqa", lambda q, k, v: ops.attention(q, k, v, causal=True),
     [normal(1, 4, 3, 4), normal(1, 2, 3, 4), normal(1, 2, 3, 4)], {"attention"}),
    ("attention-mask-scale", lambda q, k, v, m: ops.attention(q, k, v, m, scale=0.3),
     [normal(2, 2, 2, 3), normal(2, 2, 4, 3), normal(2, 2, 4, 2),
      np.array([[True, False, True, True], [False, False, False, False]])], {"attention"}),
]


def _declared_elementwise_cases() -> list:
    """A case for every differentiable elementwise op not listed above, drawn inside the domain
    its declaration gives its conformance cases: a new unary/binary op needs no line here."""
    listed = set().union(*(c[3] for c in CASES))
    out = []
    for op in ops.ALL_OPS:
        family = (op.cases or {}).get("family")
        if op.name in listed or op.vjp is None or family not in ("unary", "binary"):
            continue
        low, high = op.cases.get("domain") or (-3.0, 3.0)
        domains = [(low, high)] + ([op.cases.get("rhs_domain") or (low, high)] if family == "binary" else [])
        inputs = [rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), (3, 4)) for lo, hi in domains]
        out.append((f"{op.name}-declared", op, inputs, {op.name}))
    return out


CASES += _declared_elementwise_cases()

# Not differentiable (bool/integer results or no tensor inputs): their outputs are constants.
NOT_DIFFERENTIABLE = {"eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and",
                      "logical_or", "argmax", "full", "arange", "random_normal", "random_uniform"}


def test_every_differentiable_op_has_a_gradient_check():
    covered = set().union(*(c[3] for c in CASES)) | {"scaled_matmul"}  # its own test below
    # FP8 ops round to float8 (piecewise constant): their straight-through VJPs are checked
    # against an independent numpy emulation in tests/precision/test_gemm.py instead
    covered |= {"quantize_fp8", "dequantize_fp8", "block_scaled_matmul", "fp8_linear"}
    # Collectives need several ranks: tests/distributed/test_collectives.py checks their VJPs
    # across 3 real processes against numpy (the global loss is the sum of the ranks' losses)
    covered |= {"all_reduce", "reduce_scatter", "all_gather", "broadcast"}
    missing = {op.name for op in ops.ALL_OPS} - covered - NOT_DIFFERENTIABLE
    assert not missing, f"ops without a gradient check: {sorted(missing)}"
    undeclared = {op.name for op in ops.PRIMITIVES if op.name not in NOT_DIFFERENTIABLE and op.vjp is None}
    assert not undeclared, f"differentiable primitives without vjp=: {sorted(undeclared)}"


_FD_CACHE: dict = {}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_finite_differences(case, backend):
    name, fn, arrays, _ = case
    if name not in _FD_CACHE:  # the oracle does not depend on the backend under test
        ref = accel.get_backend("numpy")
        y = fn(*as_tensors(arrays, ref))
        cot = np.random.default_rng(sum(map(ord, name))).standard_normal(y.shape)
        _FD_CACHE[name] = cot, finite_difference(fn, arrays, cot)
    cot, expected = _FD_CACHE[name]

    float_dtype = accel.float64 if accel.float64 in backend.dtypes else accel.float32
    inputs = as_tensors(arrays, backend, float_dtype)
    argnums = tuple(i for i, a in enumerate(arrays) if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    value, grads = accel.value_and_grad(scalar_loss(fn, cot), argnums)(*inputs)
    tol = dict(rtol=1e-6, atol=1e-7) if float_dtype is accel.float64 else dict(rtol=2e-3, atol=2e-4)
    for i, g in zip(argnums, grads):
        assert g.shape == inputs[i].shape and g.dtype is float_dtype
        np.testing.assert_allclose(np.asarray(g.numpy(), np.float64), expected[i], **tol,
                                   err_msg=f"{name}: gradient of input {i}")


def test_scaled_matmul_gradients_of_the_scales(backend):
    """float8 GEMM: the scales are float32 leaves; the expected gradient is numpy float64 math
    on the same float8 values (the op is linear in each scale, so this is exact)."""
    if accel.float8_e4m3fn not in backend.dtypes:
        pytest.skip(f"{backend.spec} has no float8")
    r = np.random.default_rng(5)
    a8 = accel.tensor(r.standard_normal((3, 4)), dtype=accel.float8_e4m3fn, backend=backend)
    b8 = accel.tensor(r.standard_normal((4, 2)), dtype=accel.float8_e4m3fn, backend=backend)
    sa_np, sb_np, c = r.uniform(0.5, 2, (3, 1)), r.uniform(0.5, 2, (1, 2)), r.standard_normal((3, 2))
    sa = accel.tensor(sa_np, dtype=accel.float32, backend=backend)
    sb = accel.tensor(sb_np, dtype=accel.float32, backend=backend)
    ct = accel.tensor(c, dtype=accel.float32, backend=backend)
    loss = lambda sa, sb: ops.sum(ops.scaled_matmul(a8, b8, sa, sb, out_dtype=accel.float32) * ct)
    gsa, gsb = accel.grad(loss, (0, 1))(sa, sb)
    p = np.asarray(a8.numpy(), np.float64) @ np.asarray(b8.numpy(), np.float64)
    sa32, sb32 = sa_np.astype(np.float32).astype(np.float64), sb_np.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(gsa.numpy(), np.sum(p * sb32 * c, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gsb.numpy(), np.sum(p * sa32 * c, axis=0, keepdims=True), rtol=1e-5, atol=1e-6)
