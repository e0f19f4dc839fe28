"""accel's own tests run with accel's pytest plugin (opt-in for everyone else: `-p accel.testing`)."""
pytest_plugins = ["accel.testing"]

import pytest  # noqa: E402


@pytest.fixture
def torch_cpu_scaled_mm(request):
    """The torch:cpu backend for tests that switch its `scaled_mm` mode: skipped unless a torch
    backend was asked for, dispatch counters (and once-per-cause warnings) reset first, the
    process-wide singleton's mode restored after, as the tests that follow expect."""
    chosen = request.config.getoption("--backend") or []
    if chosen and not any(n.split(":")[0] == "torch" for n in chosen):
        pytest.skip("no torch backend among --backend")
    import accel

    backend = accel.get_backend("torch:cpu")
    mode = backend.scaled_mm_mode
    accel.reset_dispatch_stats()
    yield backend
    backend.configure(scaled_mm=mode)
