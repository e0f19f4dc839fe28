"""Delayed scaling: the scale comes from the amax history (max or most recent, margin), the
gradient's amax is recorded in the backward pass, and the histories checkpoint by name."""
from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import ops, precision
from accel.io.safetensors import load_safetensors, save_safetensors
from accel.precision import AmaxHistory, Fp8Plan, Recipe, fp8_autocast

NAME = "model.layers.0.mlp.up_proj"


def _step(backend, plan, x, w, seed):
    def loss(x, w):
        with fp8_autocast(plan):
            y = precision.linear(NAME, x, w)
        return ops.sum(ops.mul(y, accel.tensor(seed, backend=backend)))
    return accel.grad(loss, (0, 1))(accel.tensor(x, backend=backend), accel.tensor(w, backend=backend))


def test_history_max_most_recent_and_margin(backend):
    h = AmaxHistory(3, backend)
    r_max = Recipe("t", "tensor", "delayed", history_len=3)
    assert h.scale(r_max, accel.float8_e4m3fn) is None  # empty: the layer scales from the current amax
    for v in (8.0, 2.0, 4.0, 1.0):  # the oldest (8) falls out of a length-3 history
        h.record(accel.tensor(np.array([[v]], np.float32), backend=backend))
    np.testing.assert_array_equal(h.values.numpy(), [1.0, 4.0, 2.0])
    assert float(h.scale(r_max, accel.float8_e4m3fn).numpy()[0, 0]) == np.float32(4.0 / 448)
    recent = Recipe("t", "tensor", "delayed", history_len=3, amax_compute="most_recent", margin=2)
    assert float(h.scale(recent, accel.float8_e5m2).numpy()[0, 0]) == np.float32(1.0 * 4 / 57344)


def test_delayed_scaling_uses_the_previous_steps_amax(backend):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    seed = rng.standard_normal((4, 16)).astype(np.float32)
    plan = Fp8Plan({NAME: precision.get_recipe("tensorwise_delayed")})
    x1 = rng.standard_normal((4, 32)).astype(np.float32)
    _step(backend, plan, x1, w, seed)
    hist = plan.state.layers[NAME].histories
    assert float(hist["x"].values.numpy()[0]) == np.abs(x1).max()
    assert float(hist["w"].values.numpy()[0]) == np.abs(w).max()
    g_amax = np.abs(seed).max()  # dL/dY = seed
    assert float(hist["g"].values.numpy()[0]) == np.float32(g_amax)
    # step 2 with 10x larger inputs: the scale from step 1's amax saturates them at 448
    x2 = 10 * x1
    with fp8_autocast(plan):
        y2 = precision.linear(NAME, accel.tensor(x2, backend=backend), accel.tensor(w, backend=backend)).numpy()
    sx = np.float32(np.abs(x1).max() / np.float32(448))
    sw = np.float32(np.abs(w).max() / np.float32(448))
    import ml_dtypes
    xq = np.clip(x2 / sx, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * sx
    wq = np.clip(w / sw, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * sw
    np.testing.assert_allclose(y2, xq @ wq.T, rtol=1e-5, atol=1e-4)
    assert np.abs(y2 - x2 @ w.T).max() > 1.0  # saturation really happened (delayed, not current)


def test_histories_checkpoint_by_name(backend, tmp_path):
    rng = np.random.default_rng(1)
    plan = Fp8Plan({NAME: precision.get_recipe("tensorwise_delayed")})
    for _ in range(3):
        _step(backend, plan, rng.standard_normal((4, 32)).astype(np.float32),
              rng.standard_normal((16, 32)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32))
    saved = plan.state.named_tensors()
    assert set(saved) == {f"fp8_amax_history.{NAME}.{r}" for r in ("x", "w", "g")}
    save_safetensors(str(tmp_path / "amax.safetensors"), saved)
    fresh = Fp8Plan(plan.recipes)
    fresh.state.load_named_tensors(load_safetensors(str(tmp_path / "amax.safetensors"), backend),
                                   fresh.delayed_recipes(), backend)
    for key, value in saved.items():
        np.testing.assert_array_equal(fresh.state.named_tensors()[key].numpy(), value.numpy())
    short = Fp8Plan({NAME: Recipe("tensorwise_delayed", "tensor", "delayed", history_len=4)})
    with pytest.raises(precision.PrecisionError, match=r"up_proj.*history has \[16\] entries.*keeps 4"):
        short.state.load_named_tensors(saved, short.delayed_recipes(), backend)


def test_bad_recipe_definitions():
    with pytest.raises(precision.PrecisionError, match="delayed scaling is tensor-wise only"):
        Recipe("x", "row", "delayed")
    with pytest.raises(precision.PrecisionError, match="amax_compute"):
        Recipe("x", "tensor", "delayed", amax_compute="mean")
