"""Fixtures for the npusim tests: fresh chips (configuration never leaks between tests)."""
import pytest

import accel
from accel.backends.npusim import NpuSimBackend


@pytest.fixture
def minimal():
    return NpuSimBackend("minimal")


@pytest.fixture
def ascend():
    return NpuSimBackend("ascend910b")


@pytest.fixture(autouse=True)
def _clean_stats():
    accel.reset_dispatch_stats()
    yield
    accel.reset_dispatch_stats()


def counts(chip, op: str) -> dict:
    return accel.dispatch_stats().get(chip.spec, {}).get(op, {"native": 0, "decomposed": 0, "fallback": 0,
                                                              "downcast": 0})
