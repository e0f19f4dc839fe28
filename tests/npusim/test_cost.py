"""The cost model: launch + max(flops / peak, bytes / bandwidth) per kernel, transfers at the host
link's bandwidth, reshape free. Expected values are computed here from the TOML's raw numbers."""
import os
import tomllib

import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.npusim import profile as profile_module

with open(os.path.join(profile_module.PROFILE_DIR, "ascend910b.toml"), "rb") as f:
    RAW = tomllib.load(f)
LAUNCH = RAW["launch_overhead"]
HBM = RAW["memory_bandwidth"]
HOST = RAW["host_bandwidth"]
CUBE = RAW["units"]["cube"]["peak_flops"]
VECTOR = RAW["units"]["vector"]["peak_flops"]


def _timed(chip, fn):
    before = chip.simulated_time
    out = fn()
    return out, chip.simulated_time - before


def test_compute_bound_matmul(ascend):
    m, k, n = 1024, 1024, 1024
    a = ops.zeros((m, k), accel.bfloat16, ascend)
    b = ops.zeros((k, n), accel.bfloat16, ascend)
    _, seconds = _timed(ascend, lambda: ops.matmul(a, b))
    flops, nbytes = 2 * m * k * n, 2 * (m * k + k * n + m * n)
    assert flops / CUBE["bfloat16"] > nbytes / HBM
    assert seconds == pytest.approx(LAUNCH + flops / CUBE["bfloat16"], rel=1e-12)


def test_memory_bound_elementwise_and_the_float32_vector_peak(ascend):
    x = ops.zeros((1 << 20,), accel.float32, ascend)
    _, seconds = _timed(ascend, lambda: ops.add(x, x))
    nbytes = 3 * (1 << 20) * 4
    assert seconds == pytest.approx(LAUNCH + max((1 << 20) / VECTOR["float32"], nbytes / HBM), rel=1e-12)


def test_reshape_is_free_and_transfers_cost_launch_plus_link_time(ascend):
    x = ops.zeros((4, 256), accel.float32, ascend)
    _, seconds = _timed(ascend, lambda: ops.reshape(x, (256, 4)))
    assert seconds == 0.0
    host = np.ones((1000,), np.float32)
    _, seconds = _timed(ascend, lambda: accel.from_numpy(host, backend=ascend))
    assert seconds == pytest.approx(LAUNCH + 4000 / HOST, rel=1e-12)


def test_host_fallback_adds_the_transfer_time(minimal):
    minimal.configure(dtype_policy="fallback")
    a = ops.zeros((8, 16), accel.float32, minimal)
    b = ops.zeros((16, 4), accel.float32, minimal)
    before = minimal.counters()
    with pytest.warns(accel.AccelWarning):
        _, seconds = _timed(minimal, lambda: ops.matmul(a, b))
    p = minimal.profile
    moved = [8 * 16 * 4, 16 * 4 * 4, 8 * 4 * 4]          # two inputs down, the result back up
    assert seconds == pytest.approx(sum(p.launch_overhead + n / p.host_bandwidth for n in moved), rel=1e-12)
    assert minimal.counters()["transfer_time"] - before["transfer_time"] == pytest.approx(seconds, rel=1e-12)


def test_breakdown_per_op_adds_up(ascend):
    x = ops.zeros((32, 32), accel.float16, ascend)
    for _ in range(3):
        x = ops.softmax(ops.matmul(x, x))
    rows = ascend.op_breakdown()
    assert rows["matmul"]["calls"] == 3 and rows["softmax"]["calls"] == 3
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    assert sum(r["seconds"] for r in rows.values()) == pytest.approx(ascend.simulated_time)
    ascend.reset_counters()
    assert ascend.simulated_time == 0.0 and ascend.op_breakdown() == {}
