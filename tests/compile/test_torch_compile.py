"""torch's graph compiler (backends/torch/graph.py): accel graphs as generated torch code, and
through torch.compile (inductor). Judged against eager torch (the same kernels) and against the
numpy float64 reference for the conformance cases.

The inductor tests compile C++ with the system compiler: tens of seconds on a 2-core machine,
so they are `slow` (`-m slow`); the generated-code ("python") mode runs in CI."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.conformance.generators import all_cases
from accel.conformance.judge import judge
from accel.conformance.runner import _attrs, _spec, place, reference_output
from accel.conformance.tolerances import tolerance_for
from accel.models import KVCache, LlamaConfig, LlamaModel, forward

torch = pytest.importorskip("torch")

CONFIG = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
                     max_position_embeddings=128)
PROMPT = [1, 5, 9, 33, 2, 70]


@pytest.fixture
def torch_cpu():
    backend = accel.get_backend("torch:cpu")
    yield backend
    backend.set_graph_compiler(None)


def greedy(step, model, cache, n_new):
    """Logits (float64 on the host) and greedy tokens of a prefill and n_new decode steps."""
    backend = model.backend
    ids = accel.tensor([PROMPT], dtype=accel.int64, backend=backend)
    pos = ops.arange(0, len(PROMPT), dtype=accel.int64, backend=backend)
    logits_seen, tokens = [], []
    for i in range(n_new + 1):
        logits = step(model.params, CONFIG, ids, pos, cache)[:, -1]
        logits_seen.append(np.asarray(logits.numpy(), dtype=np.float64))
        tokens.append(int(ops.argmax(logits, -1).tolist()[0]))
        start = len(PROMPT) + i
        ids = accel.tensor([[tokens[-1]]], dtype=accel.int64, backend=backend)
        pos = ops.arange(start, start + 1, dtype=accel.int64, backend=backend)
    return logits_seen, tokens


def test_python_mode_is_generated_torch_code_equal_to_eager(torch_cpu):
    torch_cpu.set_graph_compiler("python")
    model = LlamaModel.random(CONFIG, seed=3, backend=torch_cpu)
    eager_cache = KVCache.for_config(CONFIG, 1, 64, model.dtype, torch_cpu)
    want_logits, want_tokens = greedy(forward, model, eager_cache, 5)
    step = accel.compile(forward)
    cache = KVCache.for_config(CONFIG, 1, 64, model.dtype, torch_cpu)
    logits, tokens = greedy(step, model, cache, 5)
    assert tokens == want_tokens
    for got, want in zip(logits, want_logits):  # the same kernels in the same order: bit-equal
        np.testing.assert_array_equal(got, want)
    for got, want in zip(cache.k + cache.v, eager_cache.k + eager_cache.v):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    entries = step.signatures()
    assert [e.runner for e in entries] == ["backend", "backend"]
    assert all(e.run.mode == "python" and e.run.source.startswith("def forward(") for e in entries)
    assert step.stats.recompiles == 1  # prefill and decode shape; every decode token reuses it


def test_python_mode_keeps_the_index_check(torch_cpu):
    torch_cpu.set_graph_compiler("python")
    table = accel.tensor(np.arange(12, dtype=np.float32).reshape(4, 3), backend=torch_cpu)
    step = accel.compile(lambda t, i: ops.gather(t, i, 0))
    good = step(table, accel.tensor([3, 0], dtype=accel.int64, backend=torch_cpu))
    np.testing.assert_array_equal(good.numpy(), [[9, 10, 11], [0, 1, 2]])
    with pytest.raises(accel.AccelError, match="index 4"):
        step(table, accel.tensor([4, 0], dtype=accel.int64, backend=torch_cpu))


def test_unknown_mode_is_refused(torch_cpu):
    with pytest.raises(accel.BackendError, match="inductor"):
        torch_cpu.set_graph_compiler("tensorrt")


def test_generated_code_frees_values_after_their_last_use(torch_cpu):
    torch_cpu.set_graph_compiler("python")
    x = accel.tensor(np.ones((2, 3), np.float32), backend=torch_cpu)
    step = accel.compile(lambda a: ops.sum(ops.exp(ops.mul(a, 2.0)), axis=(1,)))
    np.testing.assert_allclose(step(x).numpy(), np.full(2, 3 * np.exp(2.0)), rtol=1e-6)
    source = step.signatures()[0].run.source
    assert "del v" in source and "exp" in source


# --- inductor --------------------------------------------------------------------------------
INDUCTOR_OPS = ("add", "mul", "exp", "cast", "matmul", "sum", "argmax", "gather", "index_copy",
                "index_add", "where", "softmax", "rms_norm", "rope", "attention", "cross_entropy", "embedding")


@pytest.mark.slow
def test_inductor_matches_the_reference_on_conformance_cases(torch_cpu):
    torch_cpu.set_graph_compiler("inductor")
    chosen = [op for op in ops.ALL_OPS if op.name in INDUCTOR_OPS]
    seen, failures, ran = set(), [], 0
    for case in all_cases(chosen, (accel.float32,), quick=True):
        if case.layout != "contiguous" or case.op.name in seen:
            continue
        seen.add(case.op.name)
        op, attrs = case.op, _attrs(case)
        call_attrs = {**attrs, "backend": torch_cpu} if "backend" in op.attrs else attrs
        args = [place(a, torch_cpu) for a in case.inputs]
        compiled = accel.compile(lambda *a: op(*a, **call_attrs), backend=torch_cpu)
        out = compiled(*args)
        assert compiled.signatures()[0].run.mode == "inductor"
        ran += 1
        expected = op.infer(*[_spec(a) for a in case.inputs], **attrs)
        verdict = judge(out.numpy(), reference_output(case), expected.dtype,
                        tolerance_for(op, expected.dtype.name, "torch"))
        if not verdict.passed:
            failures.append(f"{case.id}: {verdict.reason}")
    assert ran == len(INDUCTOR_OPS)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_inductor_decode_equals_eager_without_recompiling(torch_cpu):
    from torch._dynamo.utils import counters

    torch_cpu.set_graph_compiler("inductor")
    model = LlamaModel.random(CONFIG, seed=3, backend=torch_cpu)
    want_logits, want_tokens = greedy(forward, model, KVCache.for_config(CONFIG, 1, 64, model.dtype, torch_cpu), 6)
    breaks = sum(counters["graph_break"].values())
    step = accel.compile(forward)
    greedy(step, model, KVCache.for_config(CONFIG, 1, 64, model.dtype, torch_cpu), 1)  # both graphs built
    graphs = counters["stats"]["unique_graphs"]
    logits, tokens = greedy(step, model, KVCache.for_config(CONFIG, 1, 64, model.dtype, torch_cpu), 6)
    assert tokens == want_tokens
    for got, want in zip(logits, want_logits):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs  # a new cache and 6 more steps: no recompile
    assert sum(counters["graph_break"].values()) == breaks  # one dynamo graph per accel graph
    assert step.stats.recompiles == 1
    assert [e.run.mode for e in step.signatures()] == ["inductor", "inductor"]


@pytest.mark.slow
def test_model_compile_and_generate_with_inductor(torch_cpu):
    torch_cpu.set_graph_compiler("inductor")
    model = LlamaModel.random(CONFIG, seed=5, backend=torch_cpu)
    want = model.generate([PROMPT], 6, stop_at_eos=False)
    model.compile()
    assert model.generate([PROMPT], 6, stop_at_eos=False) == want


@pytest.mark.cuda
def test_cuda_graph_decode_equals_eager():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = accel.get_backend("torch:cuda")
    cuda.set_graph_compiler("python", cuda_graphs=True)
    model = LlamaModel.random(CONFIG, seed=3, backend=cuda)
    want_logits, want_tokens = greedy(forward, model, KVCache.for_config(CONFIG, 1, 64, model.dtype, cuda), 6)
    step = accel.compile(forward)
    logits, tokens = greedy(step, model, KVCache.for_config(CONFIG, 1, 64, model.dtype, cuda), 6)
    assert tokens == want_tokens
    for got, want in zip(logits, want_logits):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    decode = max(step.signatures(), key=lambda e: e.calls).run
    assert decode.replays == 5 and decode.recaptures == 0  # captured on its 2nd call, replayed after
    cuda.set_graph_compiler(None)
