"""AdamW, clipping and the schedule against torch.optim / torch.nn.utils, step by step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import accel
from accel.autodiff import optim


def _params(rng):
    return {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3), "e": rng.standard_normal((5, 2))}


@pytest.mark.parametrize("matrices_only", [False, True])
def test_adamw_matches_torch_step_by_step(backend, matrices_only):
    dtype = accel.float64 if accel.float64 in backend.dtypes else accel.float32
    rng = np.random.default_rng(0)
    start = _params(rng)
    grads_per_step = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(6)]
    lrs = [1e-2, 5e-3, 2e-2, 1e-2, 1e-3, 3e-2]

    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in start.items()}
    decayed = [tparams[k] for k in tparams if tparams[k].ndim >= 2 or not matrices_only]
    plain = [tparams[k] for k in tparams if not (tparams[k].ndim >= 2 or not matrices_only)]
    groups = [{"params": decayed, "weight_decay": 0.1}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    topt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)

    opt = optim.AdamW(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                      decay_matrices_only=matrices_only)
    params = {k: accel.tensor(v, dtype=dtype, backend=backend) for k, v in start.items()}
    state = opt.init(params)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype is accel.float64 else dict(rtol=1e-5, atol=1e-6)
    for grads, lr in zip(grads_per_step, lrs):
        for group in topt.param_groups:
            group["lr"] = lr
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        topt.step()
        params, state = opt.update(params, {k: accel.tensor(g, dtype=dtype, backend=backend)
                                            for k, g in grads.items()}, state, lr=lr)
        for k in params:
            np.testing.assert_allclose(np.asarray(params[k].numpy(), np.float64),
                                       tparams[k].detach().numpy(), **tol, err_msg=k)
        for k in params:  # the moments too (torch names them exp_avg / exp_avg_sq)
            np.testing.assert_allclose(np.asarray(state.v[k].numpy(), np.float64),
                                       topt.state[tparams[k]]["exp_avg_sq"].numpy(), **tol)
    assert state.step == len(lrs)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_by_global_norm_matches_torch(backend, max_norm):
    rng = np.random.default_rng(1)
    raw = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(7)}
    tgrads = [torch.tensor(v, dtype=torch.float32) for v in raw.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g.clone()
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    clipped, norm = optim.clip_by_global_norm(
        {k: accel.tensor(v, dtype=accel.float32, backend=backend) for k, v in raw.items()}, max_norm)
    assert float(norm) == pytest.approx(float(tnorm), rel=1e-6)
    for (k, c), p in zip(clipped.items(), tparams):
        np.testing.assert_allclose(c.numpy(), p.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_cosine_schedule_warmup_peak_and_floor():
    lr = lambda s: optim.cosine_schedule(s, base_lr=1.0, warmup=10, total=110, min_ratio=0.1)
    assert [lr(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    steps = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_gradient_accumulation_equals_the_big_batch(backend):
    """Mean of micro-batch gradients == gradient of the mean loss over the whole batch."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3))
    w0 = rng.standard_normal(3)
    loss = lambda w, xb: accel.ops.mean(accel.ops.tanh(accel.ops.matmul(xb, w)))
    w = accel.tensor(w0, dtype=accel.float32, backend=backend)
    full = accel.grad(loss)(w, accel.tensor(x, dtype=accel.float32, backend=backend))
    total = None
    for part in np.split(x, 4):
        g = accel.grad(loss)(w, accel.tensor(part, dtype=accel.float32, backend=backend))
        total = optim.add_grads(total, {"w": g})
    avg = optim.scale_grads(total, 1 / 4)["w"]
    np.testing.assert_allclose(avg.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)
