"""value_and_grad traces under accel.compile: forward and backward become one graph."""
import numpy as np

import accel
from accel import ops


def test_compiled_value_and_grad_matches_the_analytic_gradient(backend):
    rng = np.random.default_rng(0)
    w0, x0 = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)

    def loss(w, x):
        return ops.sum(ops.tanh(ops.matmul(x, w)) ** 2.0)

    step = accel.compile(accel.value_and_grad(loss))
    w, x = accel.tensor(w0, backend=backend), accel.tensor(x0, backend=backend)
    for _ in range(2):
        value, grad = step(w, x)
    z = np.tanh(x0.astype(np.float64) @ w0)
    np.testing.assert_allclose(float(value), np.sum(z ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad.numpy(), np.float64), x0.T @ (2 * z * (1 - z ** 2)),
                               rtol=1e-4, atol=1e-6)
    assert step.stats.traces == 1
    graph = step.signatures()[0].traced
    assert graph.op_counts()["matmul"] >= 2  # the backward matmul is in the same graph
