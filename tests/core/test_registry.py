"""Backend selection: argument > accel.use > ACCEL_BACKEND > auto-detect; errors list what exists."""
import subprocess
import sys

import pytest

import accel


def test_numpy_reference_is_installed_and_available():
    status = accel.available_backends()["numpy"]
    assert status.available and status.devices == ("cpu",)
    assert accel.reference_backend().name == "numpy"


def test_unknown_backend_lists_installed_ones_and_what_to_install():
    with pytest.raises(accel.BackendError) as info:
        accel.get_backend("tpu_of_dreams")
    assert "installed:" in str(info.value) and "numpy" in str(info.value)
    assert "pip install" in str(info.value)


def test_unknown_device_lists_the_devices():
    with pytest.raises(accel.BackendError, match="'numpy' has no device 'cuda:7'"):
        accel.get_backend("numpy:cuda:7")


def test_use_context_sets_and_restores_the_backend():
    before = accel.current_backend()
    with accel.use("numpy") as b:
        assert accel.current_backend() is b
        assert accel.ops.zeros((2,)).backend is b
    assert accel.current_backend() is before


def test_explicit_argument_beats_context():
    with accel.use("numpy"):
        t = accel.ops.full((1,), 3.0, backend="numpy")
    assert t.backend.name == "numpy"


def run_py(code, env_extra):
    import os

    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_env_var_selects_the_backend_and_bad_value_is_a_clear_error():
    ok = run_py("import accel; print(accel.current_backend().spec)", {"ACCEL_BACKEND": "numpy"})
    assert ok.stdout.strip() == "numpy", ok.stderr
    bad = run_py("import accel\ntry:\n accel.current_backend()\nexcept accel.BackendError as e: print('ERR', e)",
                 {"ACCEL_BACKEND": "nonesuch"})
    assert "ERR unknown backend 'nonesuch'" in bad.stdout, bad.stderr


def test_broken_plugin_is_reported_unavailable_and_never_breaks_import(tmp_path):
    # A real distribution whose entry point fails to import, found through importlib.metadata.
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[accel.backends]\nbroken = no_such_module_xyz:Backend\n")
    code = ("import sys; sys.path.insert(0, %r)\nimport accel\ns = accel.available_backends()['broken']\n"
            "print(s.available, s.reason)" % str(tmp_path))
    out = run_py(code, {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False plugin failed to import") and "no_such_module_xyz" in out.stdout
