"""value_and_grad's on_grad_ready hook: called once per differentiated leaf, during the backward
walk, with exactly the gradient the call returns; the gradients themselves are bitwise those of
a call without the hook."""
from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import ops
from accel.autodiff.autograd import value_and_grad
from accel.models.llama import init_params
from tests.training.test_model_gradients import CONFIG, causal_lm_loss


def test_every_model_parameter_once_with_the_returned_gradient_bitwise(backend):
    params = init_params(CONFIG, seed=3, backend=backend, dtype=accel.float32)
    ids = accel.from_numpy(np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 7)), backend)
    loss = lambda p, i: causal_lm_loss(p, CONFIG, i)  # noqa: E731
    plain_value, plain = value_and_grad(loss)(params, ids)

    calls: list[tuple[tuple, accel.Tensor]] = []
    value, grads = value_and_grad(loss, on_grad_ready=lambda path, g: calls.append((path, g)))(params, ids)

    assert sorted(path for path, _ in calls) == sorted((name,) for name in params)   # each exactly once
    for (name,), g in calls:
        assert g is grads[name]                                   # the very tensor returned
        a, b = g.numpy(), plain[name].numpy()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name   # bitwise, hook or not
    assert float(value) == float(plain_value)
    # the walk announces in reverse layer order, which only a hook fired during it can see
    order = [path[0] for path, _ in calls]
    assert order[0] in ("lm_head.weight", "model.norm.weight")
    assert order[-1] == "model.embed_tokens.weight"
    last = {layer: max(i for i, n in enumerate(order) if n.startswith(f"model.layers.{layer}."))
            for layer in range(CONFIG.num_hidden_layers)}
    first = {layer: min(i for i, n in enumerate(order) if n.startswith(f"model.layers.{layer}."))
             for layer in range(CONFIG.num_hidden_layers)}
    assert last[1] < first[0]


def test_pytrees_unused_integer_and_returned_leaves(backend):
    rng = np.random.default_rng(1)
    w = accel.from_numpy(rng.standard_normal((3, 2)).astype(np.float32), backend)
    b = accel.from_numpy(rng.standard_normal(2).astype(np.float32), backend)
    unused = accel.from_numpy(np.ones(4, np.float32), backend)
    count = accel.from_numpy(np.arange(3), backend)                  # integer: not differentiated
    x = accel.from_numpy(rng.standard_normal((5, 3)).astype(np.float32), backend)

    def fn(p, x):
        return ops.sum(ops.tanh(ops.matmul(x, p["w"]) + p["b"][0]))

    calls: dict[tuple, list] = {}
    hook = lambda path, g: calls.setdefault(path, []).append(g)  # noqa: E731
    params = {"w": w, "b": [b], "unused": unused, "count": count}
    _, (gp, gx) = value_and_grad(fn, (0, 1), on_grad_ready=hook)(params, x)
    assert set(calls) == {(0, "w"), (0, "b", 0), (0, "unused"), (1,)}
    assert all(len(v) == 1 for v in calls.values())
    assert calls[(0, "w")][0] is gp["w"] and calls[(0, "b", 0)][0] is gp["b"][0] and calls[(1,)][0] is gx
    assert calls[(0, "unused")][0] is gp["unused"] and not gp["unused"].numpy().any()
    assert gp["count"] is None
    # the reference: d/dw sum(tanh(xw + b)) in float64
    xf, wf, bf = (t.numpy().astype(np.float64) for t in (x, w, b))
    d = 1 - np.tanh(xf @ wf + bf) ** 2
    np.testing.assert_allclose(gp["w"].numpy(), xf.T @ d, rtol=1e-5, atol=1e-6)

    # the result is a leaf itself / does not depend on the leaf at all
    got = {}
    value_and_grad(lambda s: s, on_grad_ready=lambda path, g: got.setdefault("self", g))(
        accel.from_numpy(np.float32(2.0).reshape(()), backend))
    assert float(got["self"]) == 1.0
    _, g = value_and_grad(lambda s, y: ops.sum(y), on_grad_ready=lambda path, g: got.setdefault("const", g))(w, x)
    assert got["const"] is g and not g.numpy().any()


def test_a_failing_hook_propagates_and_releases_the_tape(backend):
    w = accel.from_numpy(np.ones((2, 2), np.float32), backend)

    def hook(path, g):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        value_and_grad(lambda p: ops.sum(ops.mul(p, p)), on_grad_ready=hook)(w)
    assert not w.requires_grad
    _, g = value_and_grad(lambda p: ops.sum(ops.mul(p, p)))(w)
    np.testing.assert_array_equal(g.numpy(), 2 * np.ones((2, 2), np.float32))
