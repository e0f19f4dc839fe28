"""pytest plugin shipped with accel: `pytest --backend NAME` (repeatable) runs every test that
takes the `backend` fixture once per selected backend; default: every available backend.

A vendor runs the same tests on its plugin without copying them.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("accel")
    group.addoption("--backend", action="append", default=[], metavar="NAME",
                    help="accel backend to test, e.g. numpy, torch:cpu (repeatable; default: all available)")
    group.addoption("--conformance-full", action="store_true", default=False,
                    help="run the full conformance cases (default: the quick CI subset without the "
                         "big sizes); vendors: pytest --pyargs accel.conformance.test_backend --backend NAME")


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
