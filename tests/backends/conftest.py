"""Fixtures shared by the torch backend's own tests."""
import pytest

import accel


@pytest.fixture(scope="module")
def tb(request):
    """torch:cpu, unless the run chose backends and torch is not among them."""
    pytest.importorskip("torch")
    chosen = request.config.getoption("--backend") or []
    if chosen and not any(n.split(":")[0] == "torch" for n in chosen):
        pytest.skip("no torch backend among --backend")
    return accel.get_backend("torch:cpu")
