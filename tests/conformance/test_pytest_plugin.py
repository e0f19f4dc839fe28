"""accel's pytest plugin is opt-in (`-p accel.testing`), and a vendor's reviewed known-failures
file travels with its backend class (read by the CLI and by pytest)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from accel.backends.numpy.backend import NumpyBackend
from accel.conformance.expectations import Expectations
from accel.core.errors import AccelError

FOREIGN_TEST = '''
def test_backend_fixture(backend):
    assert backend.spec == "numpy"
'''


def _pytest(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_installing_accel_adds_nothing_to_other_pytest_runs(tmp_path):
    (tmp_path / "test_foreign.py").write_text(FOREIGN_TEST)
    plain = _pytest(tmp_path, "--backend", "numpy")
    assert plain.returncode != 0 and "unrecognized arguments: --backend" in plain.stderr
    opted = _pytest(tmp_path, "-p", "accel.testing", "--backend", "numpy")
    assert opted.returncode == 0 and "1 passed" in opted.stdout, opted.stdout + opted.stderr


def test_a_backend_names_its_own_known_failures_file(tmp_path):
    path = tmp_path / "vendor_known_failures.toml"
    path.write_text('[[xfail]]\nop = "exp"\ndtype = "float16"\nreason = "the vendor library rounds once more"\n')

    class Vendor(NumpyBackend):
        name = "vendor_with_file"
        known_failures = str(path)

    found = Expectations.for_backend(Vendor())
    assert found.source == str(path) and [e.op for e in found.entries] == ["exp"]

    class Missing(NumpyBackend):
        name = "vendor_missing_file"
        known_failures = str(tmp_path / "nope.toml")

    with pytest.raises(AccelError, match="known_failures file .* does not exist"):
        Expectations.for_backend(Missing())
