"""The whole training step compiled (accel/train/compiled_step.py) against the eager step:
forward, backward, clipping, the warmup+cosine schedule and AdamW, float32, over several steps.

Judged with the float32 tolerances of accel/conformance/tolerances.py (the eager step is the
reference: the compiled graph runs the same math with the scalars as tensors), and checked
independently: the schedule's tensor form against the Python formula, and one AdamW step of a
one-parameter problem against a float64 numpy computation."""
import math

import numpy as np
import pytest

import accel
from accel import ops
from accel.autodiff.optim import AdamW, cosine_schedule
from accel.conformance.tolerances import ACCUMULATING, ELEMENTWISE
from accel.models import LlamaConfig
from accel.models.llama import causal_lm_loss, init_params
from accel.train.compiled_step import StepConfig, compile_train_step, eager_train_step, lr_tensor

CONFIG = LlamaConfig(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, initializer_range=0.2,
                     max_position_embeddings=64)
STEP = StepConfig(optimizer=AdamW(lr=3e-3, weight_decay=0.1), grad_clip=0.5, warmup=2, total_steps=6)
RTOL, ATOL = ELEMENTWISE["float32"]
NMSE, SCALED_MAX = ACCUMULATING["float32"]


def batch(backend, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(0, CONFIG.vocab_size, (2, 9))
    return (accel.tensor(w[:, :-1], dtype=accel.int64, backend=backend),
            accel.tensor(w[:, 1:], dtype=accel.int64, backend=backend))


def host(t):
    return np.asarray(t.numpy(), dtype=np.float64)


def assert_close_accumulated(got, want, what):
    """NMSE and scaled max error (the accumulating-op judgement: a step is a long chain of sums)."""
    err = got - want
    denom = max(float(np.sum(want ** 2)), 1e-30)
    rms = math.sqrt(denom / want.size)
    assert float(np.sum(err ** 2)) / denom <= NMSE, what
    assert float(np.max(np.abs(err))) / max(rms, 1e-30) <= SCALED_MAX, what


def run(step_fn, backend, n):
    params = init_params(CONFIG, 1, backend)
    state = STEP.optimizer.init(params)
    losses = []
    for i in range(n):
        loss, params, state = step_fn(params, state, batch(backend, i), i)
        losses.append(float(loss.numpy()))
    return losses, params, state


@pytest.mark.parametrize("mode", ["numpy", "torch:cpu", pytest.param("jax:cpu", marks=pytest.mark.slow), "onnxruntime"])
def test_compiled_step_equals_eager_step(mode):
    try:
        backend = accel.get_backend(mode)
    except accel.BackendError as exc:
        pytest.skip(f"{mode} is not installed here: {exc}")
    loss_fn = causal_lm_loss(CONFIG)
    want_losses, want_params, want_state = run(eager_train_step(loss_fn, STEP), backend, 4)
    compiled = compile_train_step(loss_fn, STEP)
    losses, params, state = run(compiled, backend, 4)
    np.testing.assert_allclose(losses, want_losses, rtol=RTOL, atol=ATOL)
    assert state.step == want_state.step == 4
    for name in want_params:
        assert_close_accumulated(host(params[name]), host(want_params[name]), name)
        assert_close_accumulated(host(state.m[name]), host(want_state.m[name]), name)
    # one trace for all four steps (the step index and the schedule are tensors) ...
    assert compiled.compiled.stats.traces == 1 and compiled.compiled.stats.cache_hits == 3
    # ... and one graph holding the update of every parameter
    graph = compiled.compiled.signatures()[0].graph
    assert len(graph.outputs) == 1 + 3 * len(want_params)
    runner = compiled.compiled.signatures()[0].runner
    assert runner == ("interpreter" if mode == "numpy" else "backend")  # torch, jax, ORT compile it whole


def test_schedule_tensor_matches_the_formula():
    backend = accel.get_backend("numpy")
    for step in range(0, 9):
        got = float(lr_tensor(STEP, accel.tensor(float(step), dtype=accel.float64, backend=backend)).numpy())
        want = cosine_schedule(step, base_lr=3e-3, warmup=2, total=6, min_ratio=0.1)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), step


def test_one_adamw_step_against_numpy_float64():
    """w <- w - lr*wd*w - lr/(1-b1) * m/(sqrt(v)/sqrt(1-b2) + eps) for loss = sum(w*x)."""
    backend = accel.get_backend("numpy")
    x_host = np.array([[0.5, -2.0], [3.0, 0.25]], np.float32)
    w_host = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    opt = AdamW(lr=0.1, weight_decay=0.5, eps=1e-8)
    cfg = StepConfig(optimizer=opt, grad_clip=1.0)
    x = accel.tensor(x_host, backend=backend)
    step = compile_train_step(lambda p, xx: ops.sum(ops.mul(p["w"], xx)), cfg)
    params = {"w": accel.tensor(w_host, backend=backend)}
    loss, new, state = step(params, opt.init(params), (x,), 0)
    g = x_host.astype(np.float64)
    g = g * min(1.0, 1.0 / (np.sqrt(np.sum(g * g)) + 1e-6))      # clipped to norm 1
    m, v = 0.1 * g, 0.001 * g * g
    w = w_host * (1 - 0.1 * 0.5)
    want = w - 0.1 / (1 - 0.9) * m / (np.sqrt(v) / np.sqrt(1 - 0.999) + 1e-8)
    np.testing.assert_allclose(host(new["w"]), want, rtol=RTOL, atol=ATOL)
    assert float(loss.numpy()) == pytest.approx(float(np.sum(w_host * x_host)), rel=1e-6)


@pytest.mark.slow
def test_inductor_compiled_step_equals_eager_step():
    backend = accel.get_backend("torch:cpu")
    backend.set_graph_compiler("inductor")
    try:
        loss_fn = causal_lm_loss(CONFIG)
        want_losses, want_params, _ = run(eager_train_step(loss_fn, STEP), backend, 3)
        compiled = compile_train_step(loss_fn, STEP)
        losses, params, _ = run(compiled, backend, 3)
        assert compiled.compiled.signatures()[0].run.mode == "inductor"
    finally:
        backend.set_graph_compiler(None)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=ATOL)
    for name in want_params:
        assert_close_accumulated(host(params[name]), host(want_params[name]), name)


def test_step_config_from_accel_train_config_has_the_same_schedule():
    from accel.train.loop import TrainConfig

    cfg = TrainConfig(steps=50, lr=2e-3, warmup=5, grad_clip=0.7, weight_decay=0.05)
    step_cfg = StepConfig.from_train_config(cfg)
    assert step_cfg.grad_clip == 0.7 and step_cfg.optimizer.weight_decay == 0.05
    backend = accel.get_backend("numpy")
    for i in (0, 4, 5, 20, 49, 60):
        as_tensor = float(lr_tensor(step_cfg, accel.tensor(float(i), dtype=accel.float64, backend=backend)).numpy())
        assert step_cfg.lr_at(i) == cfg.lr_at(i)
        assert as_tensor == pytest.approx(cfg.lr_at(i), rel=1e-12)
