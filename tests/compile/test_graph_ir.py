"""Graph IR and accel.compile on the reference backend: tracing, lowering, the interpreter,
the signature cache, in-place write-back and the errors a user meets."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.numpy.backend import NumpyBackend
from accel.graph.compile import trace
from accel.graph.ir import bind_inputs
from accel.graph.interpreter import GraphInterpreter
from accel.graph.trace import backend_policy, expand_all, lower


@pytest.fixture()
def numpy_backend():
    return accel.get_backend("numpy")


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def mlp(x, w, b):
    return ops.softmax(ops.linear(x, w, b) * 0.5 + 1.0, -1)


def test_trace_records_ssa_nodes_with_inferred_specs(numpy_backend):
    x = accel.from_numpy(rand(2, 3), numpy_backend)
    w = accel.from_numpy(rand(4, 3, seed=1), numpy_backend)
    b = accel.from_numpy(rand(4, seed=2), numpy_backend)
    graph, tensors = trace(mlp, x, w, b)
    assert tensors == [x, w, b]
    assert [n.op.name for n in graph.nodes] == ["linear", "mul", "add", "softmax"]
    assert [str(s) for s in graph.input_specs] == ["float32[2, 3]", "float32[4, 3]", "float32[4]"]
    assert str(graph.output_specs[0]) == "float32[2, 4]"
    # SSA: every node reads values defined before it and defines a new one
    defined = set(graph.inputs) | set(graph.constants)
    for node in graph.nodes:
        assert set(node.input_ids()) <= defined and node.output not in defined
        defined.add(node.output)
    # the two Python scalars became float32 0-d constants (weak scalars take the tensor dtype)
    assert sorted(str(graph.specs[c]) for c in graph.constants) == ["float32[]", "float32[]"]
    assert "softmax(%" in str(graph)


def test_lowering_expands_composites_without_kernels_and_matches_eager(numpy_backend):
    x = accel.from_numpy(rand(2, 3), numpy_backend)
    w = accel.from_numpy(rand(4, 3, seed=1), numpy_backend)
    b = accel.from_numpy(rand(4, seed=2), numpy_backend)
    graph, _ = trace(mlp, x, w, b)
    lowered = lower(graph, backend_policy(numpy_backend))
    assert all(n.op.is_primitive for n in lowered.nodes)
    assert {"matmul", "permute", "exp", "max", "sum", "div"} <= set(lowered.op_counts())
    got = GraphInterpreter(lowered)(x.data, w.data, b.data)[0]
    # independent float64 reference
    z = (x.numpy().astype(np.float64) @ w.numpy().T + b.numpy()) * 0.5 + 1.0
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=2e-6, atol=1e-7)
    # and bit-identical to the eager call on the same backend (same kernels, same order)
    np.testing.assert_array_equal(got, mlp(x, w, b).numpy())


def test_compile_caches_per_signature_and_counts_recompiles(numpy_backend, caplog):
    calls = []

    def f(x, scale):
        calls.append(1)
        return ops.sum(x * scale, -1)

    fast = accel.compile(f)
    x = accel.from_numpy(rand(3, 5), numpy_backend)
    with caplog.at_level("INFO", logger="accel"):
        np.testing.assert_allclose(fast(x, 2.0).numpy(), (x.numpy() * 2).sum(-1), rtol=1e-6)
    assert "accel.compile(f): traced for numpy" in caplog.text
    for _ in range(3):
        fast(accel.from_numpy(rand(3, 5, seed=7), numpy_backend), 2.0)
    assert fast.stats.traces == 1 and fast.stats.recompiles == 0 and fast.stats.cache_hits == 3
    assert len(calls) == 1  # the Python function ran once, while tracing
    fast(accel.from_numpy(rand(4, 5), numpy_backend), 2.0)   # new shape
    fast(x, 3.0)                                              # new Python value
    fast(x.astype(accel.float64), 2.0)                        # new dtype
    assert fast.stats.traces == 4 and fast.stats.recompiles == 3


def test_inplace_update_of_an_argument_is_written_back(numpy_backend):
    def write(cache, pos, values):
        cache.index_copy_(0, pos, values)
        return ops.sum(cache)

    fast = accel.compile(write)
    cache = accel.from_numpy(np.zeros((6, 2), np.float32), numpy_backend)
    for step in range(3):
        pos = ops.arange(step, step + 1, backend=numpy_backend)
        total = fast(cache, pos, accel.from_numpy(np.full((1, 2), step + 1.0, np.float32), numpy_backend))
        assert total.item() == 2 * sum(range(1, step + 2))
    np.testing.assert_array_equal(cache.numpy()[:4, 0], [1, 2, 3, 0])
    entry = fast.signatures()[0]
    assert entry.graph.mutations and entry.run.inplace_nodes == 1  # no copy of the buffer
    assert fast.stats.traces == 1


def test_returning_an_argument_returns_the_callers_tensor(numpy_backend):
    def bump(cache, values):
        cache.index_copy_(0, ops.arange(0, 1, backend=numpy_backend), values)
        return cache, 7

    cache = accel.from_numpy(np.zeros((2, 2), np.float32), numpy_backend)
    out, seven = accel.compile(bump)(cache, accel.from_numpy(np.ones((1, 2), np.float32), numpy_backend))
    assert out is cache and seven == 7
    np.testing.assert_array_equal(cache.numpy(), [[1, 1], [0, 0]])


def test_reading_a_traced_value_is_a_clear_error(numpy_backend):
    def branchy(x):
        return x * 2 if ops.sum(x).item() > 0 else x

    with pytest.raises(accel.OpError, match="cannot read the value of traced tensor") as info:
        accel.compile(branchy)(accel.from_numpy(rand(3), numpy_backend))
    assert "HINT" in str(info.value)


def test_mutating_a_closed_over_tensor_is_refused(numpy_backend):
    hidden = accel.from_numpy(np.zeros((2,), np.float32), numpy_backend)

    def sneaky(x):
        hidden.index_copy_(0, ops.arange(0, 2, backend=numpy_backend), x)
        return x

    with pytest.raises(accel.OpError, match="not one of its arguments"):
        accel.compile(sneaky)(accel.from_numpy(np.ones(2, np.float32), numpy_backend))
    assert type(hidden.data) is np.ndarray  # restored, still usable


def test_constants_and_bound_inputs(numpy_backend):
    w = accel.from_numpy(rand(3, 3), numpy_backend)
    x = accel.from_numpy(rand(2, 3, seed=3), numpy_backend)
    graph, tensors = trace(lambda x, w: ops.matmul(x, w), x, w)
    frozen = bind_inputs(graph, {1: w.data})
    assert len(frozen.inputs) == 1 and frozen.constant_bytes() == 36
    np.testing.assert_array_equal(GraphInterpreter(frozen)(x.data)[0], x.numpy() @ w.numpy())


class NoExpBackend(NumpyBackend):
    name = "noexp_compile_test"
    is_reference = False
    kernels = {op: k for op, k in NumpyBackend.kernels.items() if op is not ops.exp}
    inplace_kernels = {}


def test_interpreter_counts_host_fallbacks_per_call_and_strict_refuses():
    accel.register_backend(NoExpBackend)
    backend = accel.get_backend("noexp_compile_test")
    accel.reset_dispatch_stats()
    fast = accel.compile(lambda x: ops.exp(x) + 1.0)
    x = accel.from_numpy(np.zeros(3, np.float32), backend)
    with pytest.warns(accel.AccelWarning, match="exp on noexp_compile_test falls back"):
        fast(x)
    fast(x)
    assert accel.dispatch_stats()["noexp_compile_test"]["exp"]["fallback"] == 2
    assert fast.signatures()[0].run.fallback_nodes == ["exp"]
    with accel.strict():
        with pytest.raises(accel.UnsupportedError):
            fast(x)


def test_every_composite_decomposition_traces_to_primitives(numpy_backend):
    q = accel.from_numpy(rand(1, 4, 3, 8), numpy_backend)
    kv = accel.from_numpy(rand(1, 2, 5, 8, seed=1), numpy_backend)
    mask = accel.from_numpy(np.tril(np.ones((3, 5), bool), 2), numpy_backend)
    graph, _ = trace(lambda q, k, m: ops.attention(q, k, k, m), q, kv, mask)
    flat = lower(graph, expand_all)
    assert all(n.op.is_primitive for n in flat.nodes)
    got = GraphInterpreter(flat)(q.data, kv.data, mask.data)[0]
    want = ops.attention.reference(q.numpy(), kv.numpy(), kv.numpy(), mask.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
