"""pytest plugin shipped with accel, opt-in: `pytest -p accel.testing --backend NAME`
(repeatable) runs every test that takes the `backend` fixture once per selected backend; without
`--backend`, every available backend. Installing accel adds nothing to other projects' pytest runs.

A vendor runs accel's conformance tests on its plugin without copying them:

    pytest -p accel.testing --pyargs accel.conformance.test_backend --backend myvendor:npu \
        [--conformance-full] [--accel-expectations my_known_failures.toml]

accel's own tests load it from tests/conftest.py (`pytest_plugins`).
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("accel")
    group.addoption("--backend", action="append", default=[], metavar="NAME",
                    help="accel backend to test, e.g. numpy, torch:cpu (repeatable; default: all available)")
    group.addoption("--conformance-full", action="store_true", default=False,
                    help="run the full conformance cases (default: the quick CI subset without the "
                         "big sizes); vendors: pytest -p accel.testing --pyargs accel.conformance.test_backend "
                         "--backend NAME")
    group.addoption("--accel-expectations", default=None, metavar="FILE",
                    help="reviewed known failures (TOML) for the conformance tests; default: the backend's "
                         "own `known_failures` file, else accel/conformance/expectations/<backend>.toml")


def selected_backends(config) -> list[str]:
    chosen = config.getoption("--backend") or []
    if chosen:
        return chosen
    import accel

    names = []
    for name, status in accel.available_backends().items():
        if not status.available:
            continue
        if accel.backend_class_is_cpu_only(name):
            names.append(name)
        else:
            # one device per backend by default: the CPU where there is one, else the first
            devices = status.devices
            names.append(f"{name}:{'cpu' if 'cpu' in devices else devices[0]}")
    return names


def pytest_generate_tests(metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize("backend_name", names, ids=names, scope="session")


@pytest.fixture(scope="session")
def backend(backend_name):
    """The accel Backend instance under test."""
    import accel

    return accel.get_backend(backend_name)
