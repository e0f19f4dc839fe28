import pytest

import accel
import accel.models


@pytest.fixture
def bundled():
    return accel.models.load_pretrained(accel.models.bundled_path(), backend=accel.reference_backend())


@pytest.fixture(scope="module")
def calibration():
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=accel.reference_backend())
    from accel.cli.train import default_data
    from accel.precision import calibration_batches

    return calibration_batches(model, default_data(), 2, 4, 48, seed=0)
