"""Delayed-scaling amax histories all-reduced (max) across two real ranks (gloo on 127.0.0.1):
afterwards both ranks hold the elementwise max and quantize alike."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("torch.distributed")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
from spawn_ranks import run_ranks  # noqa: E402

NAME = "model.layers.0.mlp.up_proj"


def scenario(own_backend: str) -> dict:
    import accel
    import accel.distributed as dist
    from accel import precision

    info = dist.init(backend=own_backend, timeout_s=60)
    plan = precision.Fp8Plan({NAME: precision.get_recipe("tensorwise_delayed")})
    layer = plan.state.layer(NAME, plan.recipes[NAME], accel.get_backend(own_backend))
    for step in range(3):  # rank r sees amax (r + 1) * (step + 1) for x, its negation order for w
        for role, v in (("x", (info.rank + 1) * (step + 1)), ("w", 10.0 - info.rank * 3 - step)):
            layer.histories[role].record(accel.tensor(np.array([[v]], np.float32), backend=own_backend))
    plan.state.all_reduce_amax()
    return {k: v.numpy().tolist() for k, v in plan.state.named_tensors().items()}


@pytest.mark.slow
def test_amax_histories_all_reduce_to_the_max_across_ranks():
    results = run_ranks(scenario, ["torch:cpu", "numpy"])
    assert all("crashed" not in r for r in results), results
    x = f"fp8_amax_history.{NAME}.x"
    w = f"fp8_amax_history.{NAME}.w"
    # newest first: rank 0 recorded x 1,2,3 and w 10,9,8; rank 1 x 2,4,6 and w 7,6,5
    for r in results:
        assert r[x][:3] == [6.0, 4.0, 2.0] and r[w][:3] == [8.0, 9.0, 10.0]
    assert results[0] == results[1]
