import pytest

import accel
import accel.models


@pytest.fixture(autouse=True)
def _needs_float8_storage(request):
    """FP8 numerics need float8 tensors; on a backend without them (npusim's profiles) these
    tests are skipped, and test_policy_errors.py asserts the error such a backend gives."""
    if "backend" not in request.fixturenames:
        return
    backend = request.getfixturevalue("backend")
    if accel.float8_e4m3fn not in backend.dtypes:
        pytest.skip(f"{backend.spec} stores no float8 tensors (its FP8 error is asserted in test_policy_errors.py)")


@pytest.fixture
def bundled():
    return accel.models.load_pretrained(accel.models.bundled_path(), backend=accel.reference_backend())


@pytest.fixture(scope="module")
def calibration():
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=accel.reference_backend())
    from accel.cli.train import default_data
    from accel.precision import calibration_batches

    return calibration_batches(model, default_data(), 2, 4, 48, seed=0)
