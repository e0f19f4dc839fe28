"""Auto-detect ranks backends by their declared priority (capability data, no name checks in
accel/): accelerators first, then the CPU backends by eager quality — torch:cpu, numpy, npusim,
jax:cpu, onnxruntime:cpu (docs/errors.md)."""
import pytest

import accel
from accel.core.registry import auto_backend, available_backends, backend_class


def cpu_rank(name: str) -> int:
    cls = backend_class(name)
    return -1 if cls.is_reference else cls.priority


def test_cpu_backends_rank_by_eager_quality():
    statuses = available_backends()  # probes every plugin: priorities reflect the devices found
    here = [n for n in ("torch", "numpy", "npusim", "jax", "onnxruntime") if statuses[n].available]
    if any(d not in ("cpu", "cpu:0") for n in ("torch", "jax") if n in here for d in statuses[n].devices):
        pytest.skip("an accelerator is visible: it ranks first, the CPU order does not decide")
    ranks = [cpu_rank(n) for n in here]
    assert ranks == sorted(ranks, reverse=True), dict(zip(here, ranks))
    assert len(set(ranks)) == len(ranks)


def test_auto_detect_picks_the_first_of_that_order(monkeypatch):
    monkeypatch.delenv("ACCEL_BACKEND", raising=False)
    statuses = available_backends()
    best = max((cpu_rank(n), n) for n, s in statuses.items() if s.available)[1]
    assert auto_backend().name == best
    if statuses["torch"].available and statuses["torch"].devices == ("cpu",):
        assert auto_backend().spec == "torch:cpu"  # not jax:cpu, the slowest eager backend here


def test_an_accelerator_outranks_every_cpu_backend():
    torch_cpu = 10  # torch's priority without an accelerator (backends/torch/backend.py)
    for name in ("jax", "onnxruntime"):
        cls = backend_class(name)
        assert cls.ACCELERATOR_PRIORITY > torch_cpu > cpu_rank("numpy") > cls.CPU_PRIORITY
