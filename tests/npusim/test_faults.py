"""Seeded fault injection: DeviceError at the Nth kernel launch or with probability p."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.npusim import NpuSimBackend


def _launch_many(chip, n):
    x = accel.from_numpy(np.ones(4, np.float32), backend=chip)
    failed = []
    for i in range(1, n + 1):
        try:
            ops.exp(x)
        except accel.DeviceError as exc:
            assert "injected" in str(exc) and exc.hint
            failed.append(i)
    return failed


def test_fault_at_the_nth_launch_only(minimal):
    minimal.configure(fault_at=3)
    assert _launch_many(minimal, 6) == [3]
    assert minimal.counters()["faults_injected"] == 1


def test_fault_rate_is_seeded_and_reproducible(minimal):
    minimal.configure(fault_rate=0.1, fault_seed=7)
    first = _launch_many(minimal, 300)
    minimal.configure(fault_rate=0.1, fault_seed=7)
    assert _launch_many(minimal, 300) == first
    # the draws are Philox(seed) uniforms, one per launch: the same ones numpy gives
    draws = np.random.Generator(np.random.Philox(7)).random(300)
    assert first == [i + 1 for i in np.flatnonzero(draws < 0.1)]
    assert 10 < len(first) < 60
    minimal.configure(fault_rate=0.1, fault_seed=8)
    assert _launch_many(minimal, 300) != first


def test_faults_off_by_default_and_switchable(minimal, monkeypatch):
    assert _launch_many(minimal, 50) == []
    monkeypatch.setenv("ACCEL_NPUSIM_FAULT_AT", "2")
    assert _launch_many(NpuSimBackend("minimal"), 4) == [2]
    minimal.configure(fault_at=1)
    minimal.configure(fault_at=None)
    assert _launch_many(minimal, 3) == []


def test_bad_fault_settings_are_clear_errors(minimal):
    with pytest.raises(accel.DeviceError, match="fault_rate must lie in"):
        minimal.configure(fault_rate=2.0)
    with pytest.raises(accel.DeviceError, match="fault_at must be >= 1"):
        minimal.configure(fault_at=0)
