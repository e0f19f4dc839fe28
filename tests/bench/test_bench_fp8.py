"""`accel bench --section fp8`: each GEMM row says which path ran, read from the backend's
counters, so a torch._scaled_mm figure and an emulation figure cannot be confused. Run here on
torch:cpu at n = 64 (aligned: _scaled_mm when opted in) and n = 40 (not a multiple of 16: the
CUDA rule sends every scaled_matmul to the emulation, and the rows must say so)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

import accel  # noqa: E402
from accel.bench import fp8  # noqa: E402
from accel.bench.timing import interleave  # noqa: E402


@pytest.fixture
def tb(torch_cpu_scaled_mm):
    return torch_cpu_scaled_mm


def _paths(backend, n):
    cases = interleave(fp8._gemm_cases(backend, n, 60.0), 1, progress=False)
    return {c.key.rsplit("/", 1)[1]: c.path() for c in cases}, cases


@pytest.mark.parametrize("mode", ["native", "emulate"])
def test_gemm_rows_name_the_path_that_ran(tb, mode):
    tb.configure(scaled_mm=mode)
    paths, cases = _paths(tb, 64)
    fused = "torch._scaled_mm" if mode == "native" else "emulation"
    assert paths == {"bf16 matmul": "bf16", "scaled_matmul e4m3": fused, "scaled_matmul e4m3 row": fused,
                     "fp8_linear tensorwise": fused, "fp8_linear blockwise": "emulation"}
    calls = {c.key.rsplit("/", 1)[1]: c.calls for c in cases}
    if mode == "native":  # warm-up + one round: two calls, both native
        assert calls["scaled_matmul e4m3 row"] == {"scaled_mm_native": 2, "scaled_mm_emulated": 0}
    rows = [{"backend": tb.spec, "n": 64, "row": label, "path": p, "median_s": 1.0, "tflops": 1.0,
             "ratio_to_bf16": 1.0, "skipped": None} for label, p in paths.items()]
    table = fp8.markdown({"gemm": rows, "train": [], "train_model": {}})
    assert "| path |" in table[2] and f"| scaled_matmul e4m3 | {fused} |" in "\n".join(table)


def test_a_native_mode_row_that_fell_back_says_emulation(tb):
    tb.configure(scaled_mm="native")
    with pytest.warns(accel.AccelWarning, match="multiples of 16"):
        paths, cases = _paths(tb, 40)
    assert paths["scaled_matmul e4m3"] == paths["fp8_linear tensorwise"] == "emulation"
    assert cases[1].calls == {"scaled_mm_native": 0, "scaled_mm_emulated": 2}
