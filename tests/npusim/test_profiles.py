"""Chip profiles: shipped TOML files load into frozen dataclasses, are validated, and become the
backend's declared capabilities (`npusim:<profile>`)."""
import dataclasses

import pytest

import accel
from accel import ops
from accel.backends.npusim import NpuSimBackend, load_profile, profile_names
from accel.backends.npusim.profile import from_dict


def test_shipped_profiles_are_the_devices_default_first():
    names = profile_names()
    assert names[0] == "ascend910b" and "minimal" in names
    assert accel.available_backends()["npusim"].devices == names
    assert accel.get_backend("npusim").spec == "npusim:ascend910b"
    with pytest.raises(accel.BackendError, match="has no device 'h100'"):
        accel.get_backend("npusim:h100")


@pytest.mark.parametrize("name", profile_names())
def test_every_profile_loads_frozen_without_float64(name):
    profile = load_profile(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "x"
    assert accel.float64 not in profile.dtypes
    assert profile.units["cube"].accumulate is accel.float32
    assert profile.memory_capacity > 0 and profile.memory_bandwidth > 0 and profile.launch_overhead > 0
    chip = NpuSimBackend(name)
    caps = chip.capabilities()
    assert caps.native_ops == frozenset(profile.ops)
    assert "float64" not in caps.dtypes


def test_ascend_class_profile_matches_its_public_figures():
    p = load_profile("ascend910b")
    assert p.memory_capacity == 64 * 2**30
    assert p.units["cube"].peak_flops[accel.bfloat16] == 3.2e14
    assert {"attention", "rms_norm", "rope", "softmax", "silu", "linear"} <= set(p.ops)
    assert accel.float32 not in p.ops["attention"].dtypes   # FlashAttentionScore: fp16/bf16


def test_minimal_chip_runs_no_composite_and_no_float32_matmul():
    p = load_profile("minimal")
    assert not {op.name for op in ops.COMPOSITES} & set(p.ops)
    assert p.ops["matmul"].dtypes == {accel.bfloat16, accel.float16, accel.int8}
    assert "argmax" not in p.ops      # shows up as a host fallback in the port report


def test_a_simulator_is_never_auto_detected():
    from accel.core.registry import auto_backend

    assert auto_backend().name != "npusim"


BASE = {"name": "x", "memory_capacity": "1GiB", "memory_bandwidth": 1e11, "host_bandwidth": 1e10,
        "launch_overhead": 1e-5, "units": {"vector": {"peak_flops": {"float32": 1e12}}},
        "ops": [{"unit": "vector", "names": ["add"], "dtypes": ["float32"]}]}


@pytest.mark.parametrize("change, message", [
    ({"ops": [{"unit": "vector", "names": ["frobnicate"], "dtypes": ["float32"]}]}, "unknown op 'frobnicate'"),
    ({"ops": [{"unit": "tensorcore", "names": ["add"], "dtypes": ["float32"]}]}, "unit 'tensorcore'"),
    ({"ops": [{"unit": "vector", "names": ["add", "add"], "dtypes": ["float32"]}]}, "listed twice"),
    ({"memory_capacity": "lots"}, "memory size 'lots'"),
    ({"units": {"vector": {}}}, "needs peak_flops"),
    ({"ops": [{"unit": "vector", "names": ["add"], "dtypes": ["float33"]}]}, "unknown dtype 'float33'"),
])
def test_profile_mistakes_are_errors_that_say_where(change, message):
    with pytest.raises(accel.BackendError, match=message) as info:
        from_dict({**BASE, **change}, where="my.toml")
    assert "my.toml" in str(info.value) and info.value.hint


def test_a_profile_from_a_file_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('name = "tiny"\nmemory_capacity = "1MiB"\nmemory_bandwidth = 1e9\nhost_bandwidth = 1e9\n'
                    'launch_overhead = 1e-6\n[units.vector]\npeak_flops = { float32 = 1e9 }\n'
                    '[[ops]]\nunit = "vector"\nnames = ["add"]\ndtypes = ["float32"]\n')
    chip = NpuSimBackend(profile=load_profile(str(path)))
    assert chip.spec == "npusim:tiny" and chip.memory.capacity == 2**20
    x = accel.tensor([1.0, 2.0], backend=chip)
    assert ops.add(x, x).tolist() == [2.0, 4.0]
