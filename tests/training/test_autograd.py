"""The autograd API: pytrees, argnums, has_aux, constants, errors, recording granularity, and
value_and_grad under accel.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import accel
from accel import ops
from accel.core import dispatch
from accel.backends.numpy.backend import NumpyBackend


def t(values, backend, dtype=accel.float32):
    return accel.tensor(np.asarray(values), dtype=dtype, backend=backend)


def test_pytree_argnums_and_aux_match_torch(backend):
    rng = np.random.default_rng(0)
    w_np, b_np, x_np = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    params = {"w": t(w_np, backend), "b": [t(b_np, backend)]}
    x = t(x_np, backend)

    def loss(p, x):
        y = ops.tanh(ops.matmul(x, p["w"]) + p["b"][0])
        return ops.mean(y * y), y

    (value, aux), (gp, gx) = accel.value_and_grad(loss, (0, 1), has_aux=True)(params, x)

    tw, tb, tx = (torch.tensor(a, requires_grad=True) for a in (w_np, b_np, x_np))
    ty = torch.tanh(tx @ tw + tb)
    (ty * ty).mean().backward()
    assert float(value) == pytest.approx(float((ty * ty).mean().detach()), rel=1e-5)
    assert aux.shape == (4, 2) and not aux.requires_grad
    np.testing.assert_allclose(gp["w"].numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp["b"][0].numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_unused_leaf_gets_zeros_integer_leaf_none_and_flags_restored(backend):
    a, unused = t([1.0, 2.0], backend), t([[3.0]], backend)
    ids = accel.tensor(np.array([0, 1]), backend=backend)
    g = accel.grad(lambda p: ops.sum(p["a"] * p["a"]))({"a": a, "unused": unused, "ids": ids})
    np.testing.assert_allclose(g["a"].numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(g["unused"].numpy(), [[0.0]])
    assert g["ids"] is None
    assert not a.requires_grad and dispatch.mode.hook is None  # eager hot path restored


def test_stop_gradient_and_constant_result(backend):
    x = t([1.0, 2.0], backend)
    g = accel.grad(lambda x: ops.sum(x * accel.stop_gradient(x)))(x)
    np.testing.assert_allclose(g.numpy(), [1.0, 2.0])
    g = accel.grad(lambda x: ops.sum(ops.full((2,), 3.0, accel.float32, backend)))(x)
    np.testing.assert_allclose(g.numpy(), [0.0, 0.0])


def test_non_scalar_result_is_a_clear_error(backend):
    with pytest.raises(accel.OpError, match="scalar floating tensor") as info:
        accel.grad(lambda x: x * 2.0)(t([1.0, 2.0], backend))
    assert "HINT" in str(info.value)


def test_in_place_update_while_recording_is_an_error(backend):
    cache = ops.zeros((2, 3), accel.float32, backend)
    index = accel.tensor(np.array([1]), backend=backend)

    def loss(v):
        cache.index_copy_(0, index, v)
        return ops.sum(cache)

    with pytest.raises(accel.OpError, match="in-place") as info:
        accel.grad(loss)(t([[1.0, 2.0, 3.0]], backend))
    assert "index_copy" in str(info.value) and "HINT" in str(info.value)
    assert dispatch.mode.hook is None


class FusedSoftmaxBackend(NumpyBackend):
    """A chip with a fused softmax kernel: recording must keep using it (one tape entry)."""

    name = "fused_softmax_test"
    is_reference = False
    calls = 0

    @staticmethod
    def _softmax(x, *, axis=-1):
        FusedSoftmaxBackend.calls += 1
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    kernels = {**NumpyBackend.kernels, accel.ops.softmax: _softmax}


def test_composite_with_vjp_records_once_and_keeps_the_fused_kernel():
    accel.register_backend(FusedSoftmaxBackend)
    backend = accel.get_backend("fused_softmax_test")
    accel.reset_dispatch_stats()
    FusedSoftmaxBackend.calls = 0
    x = t([[1.0, 2.0, 0.5]], backend)
    g = accel.grad(lambda x: ops.sum(ops.softmax(x, -1) * t([[1.0, 0.0, 0.0]], backend)))(x)
    assert FusedSoftmaxBackend.calls == 1  # forward ran the fused kernel, not its decomposition
    assert "softmax" not in accel.dispatch_stats().get("fused_softmax_test", {})
    s = FusedSoftmaxBackend._softmax(np.array([[1.0, 2.0, 0.5]]))[0]
    np.testing.assert_allclose(g.numpy()[0], s[0] * (np.eye(3)[0] - s), rtol=1e-6)


def test_composite_without_vjp_records_its_decomposition_counted(backend):
    accel.reset_dispatch_stats()
    x = t([0.3, -1.2], backend)
    g = accel.grad(lambda x: ops.sum(ops.layer_norm(ops.concat([x, x * 2.0], 0))))(x)
    assert g.shape == (2,)
    assert accel.dispatch_stats()[backend.spec]["layer_norm"]["decomposed"] >= 1


def test_value_and_grad_traces_under_compile(backend):
    from accel.graph.compile import compile

    rng = np.random.default_rng(3)
    w, x = t(rng.standard_normal((3, 3)), backend), t(rng.standard_normal((2, 3)), backend)
    loss = lambda w, x: ops.mean(ops.silu(ops.matmul(x, w)) ** 2.0)
    eager_value, eager_grad = accel.value_and_grad(loss)(w, x)
    compiled = compile(accel.value_and_grad(loss))
    for _ in range(2):
        value, g = compiled(w, x)
        assert float(value) == pytest.approx(float(eager_value), rel=1e-5)
        np.testing.assert_allclose(g.numpy(), eager_grad.numpy(), rtol=1e-5, atol=1e-6)
