"""The Llama step compiled on every backend: prefill and decode equal eager, the static KV cache
makes every decode step one signature (no recompiles), and the cache updates are written back."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.models import KVCache, LlamaConfig, LlamaModel, forward

CONFIG = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
                     max_position_embeddings=128)
PROMPT = [1, 5, 9, 33, 2, 70]


def host(t):
    return np.asarray(t.numpy(), dtype=np.float64)


def run_steps(step, model, n_new):
    """Greedy decoding with `step` (eager forward or its compiled form): logits and tokens."""
    backend = model.backend
    cache = KVCache.for_config(CONFIG, 1, 64, model.dtype, backend)
    ids = accel.tensor([PROMPT], dtype=accel.int64, backend=backend)
    pos = ops.arange(0, len(PROMPT), dtype=accel.int64, backend=backend)
    all_logits, tokens = [], []
    logits = step(model.params, CONFIG, ids, pos, cache)
    for i in range(n_new):
        all_logits.append(host(logits[:, -1]))
        tokens.append(int(ops.argmax(logits[:, -1], -1).tolist()[0]))
        start = len(PROMPT) + i
        ids = accel.tensor([[tokens[-1]]], dtype=accel.int64, backend=backend)
        pos = ops.arange(start, start + 1, dtype=accel.int64, backend=backend)
        logits = step(model.params, CONFIG, ids, pos, cache)
    return all_logits, tokens, cache


def test_compiled_decode_equals_eager_and_never_recompiles(backend):
    model = LlamaModel.random(CONFIG, seed=3, backend=backend)
    eager_logits, eager_tokens, eager_cache = run_steps(forward, model, 6)
    step = accel.compile(forward)
    logits, tokens, cache = run_steps(step, model, 6)
    assert tokens == eager_tokens
    for got, want in zip(logits, eager_logits):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(cache.k + cache.v, eager_cache.k + eager_cache.v):
        np.testing.assert_allclose(host(got), host(want), rtol=1e-4, atol=1e-5)
    # one trace for the prefill shape, one for the decode shape, reused for every token
    assert step.stats.traces == 2 and step.stats.recompiles == 1 and step.stats.cache_hits == 5
    assert sorted(s.calls for s in step.signatures()) == [1, 6]  # prefill once, decode 6 times


def test_compiled_graph_keeps_the_fused_ops_the_backend_has(backend):
    model = LlamaModel.random(CONFIG, seed=3, backend=backend)
    cache = KVCache.for_config(CONFIG, 1, 64, model.dtype, backend)
    ids = accel.tensor([[1, 2]], dtype=accel.int64, backend=backend)
    pos = ops.arange(0, 2, dtype=accel.int64, backend=backend)
    step = accel.compile(forward)
    traced = step.graph_for(model.params, CONFIG, ids, pos, cache, lowered=False)
    lowered = step.graph_for(model.params, CONFIG, ids, pos, cache)
    assert traced.op_counts()["attention"] == CONFIG.num_hidden_layers
    assert len(traced.mutations) == 2 * CONFIG.num_hidden_layers  # k and v of every layer
    for op in (ops.attention, ops.rms_norm, ops.linear):
        expected = CONFIG.num_hidden_layers if op is ops.attention else None
        if backend.supports(op, model.dtype):
            assert lowered.op_counts().get(op.name, 0) >= (expected or 1)
        else:
            assert op.name not in lowered.op_counts()


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_compiled_low_precision_decode_matches_eager(backend, dtype):
    model = LlamaModel.random(CONFIG, seed=4, backend=backend, dtype=accel.as_dtype(dtype))
    eager_logits, eager_tokens, _ = run_steps(forward, model, 3)
    logits, tokens, _ = run_steps(accel.compile(forward), model, 3)
    assert tokens == eager_tokens
    for got, want in zip(logits, eager_logits):
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-3)


def test_compiled_generate_equals_eager_generate(backend):
    """LlamaModel.compile(): same greedy tokens and logits as eager; decode traces once per batch size."""
    eager = LlamaModel.random(CONFIG, seed=3, backend=backend)
    compiled = LlamaModel.random(CONFIG, seed=3, backend=backend).compile()
    assert eager.compiled is None and compiled.compiled is not None
    for prompt, next_ids in ((PROMPT, [7]), ([PROMPT, PROMPT[::-1]], [[7], [8]])):
        want = eager.generate(prompt, 5, stop_at_eos=False)
        assert compiled.generate(prompt, 5, stop_at_eos=False) == want
        # the caches hold the same sequence: one more step gives the same logits
        np.testing.assert_allclose(host(compiled.forward(next_ids, len(PROMPT) + 4)),
                                   host(eager.forward(next_ids, len(PROMPT) + 4)), rtol=1e-4, atol=1e-5)
    # per batch size: one prefill shape and one decode shape, whatever the number of steps
    assert compiled.compiled.stats.traces == 4
    assert "compiled" in repr(compiled) and "eager" in repr(compiled.compile(False))
