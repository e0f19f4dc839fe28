"""`accel port-report --set KEY=VALUE`: the options are those the backend's configure() declares
(npusim's dtype policy and faults, torch's scaled_mm kernel choice); a key the backend does not
declare is one error line naming the options it does."""
from __future__ import annotations

import pytest

import accel
from accel.cli.main import main
from accel.cli.port_report import configure_options


def fails_with(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("accel: error: ") and "Traceback" not in err, (code, err)
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


def test_declared_options_are_configure_keywords():
    assert configure_options(accel.get_backend("npusim")) == (
        "dtype_policy", "memory_capacity", "fault_at", "fault_rate", "fault_seed")
    assert configure_options(accel.get_backend("torch:cpu")) == ("scaled_mm",)
    assert configure_options(accel.get_backend("numpy")) is None  # the contract's default: configure() refuses


@pytest.mark.parametrize("spec, key, words", [
    ("torch:cpu", "dtype_policy=fallback", ["torch:cpu has no option dtype_policy", "takes: scaled_mm"]),
    ("npusim", "scaled_mm=native", ["has no option scaled_mm", "takes: dtype_policy, memory_capacity"]),
    ("numpy", "scaled_mm=native", ["takes no options (got scaled_mm)"]),
    ("torch:cpu", "scaled_mm=fused", ["unknown scaled_mm mode 'fused'"]),
])
def test_an_option_the_backend_does_not_declare_is_refused(capsys, spec, key, words):
    fails_with(capsys, ["port-report", "--backend", spec, "--set", key, "--new-tokens", "1"], *words)


def test_torch_scaled_mm_is_set_through_port_report(capsys):
    torch_cpu = accel.get_backend("torch:cpu")
    before = torch_cpu.scaled_mm_mode
    try:
        assert main(["port-report", "--backend", "torch:cpu", "--set", "scaled_mm=native", "--new-tokens", "1"]) == 0
        assert torch_cpu.scaled_mm_mode == "native" and torch_cpu.native_scaled_mm
    finally:
        torch_cpu.configure(scaled_mm=before)  # shared instance: restore
    capsys.readouterr()
