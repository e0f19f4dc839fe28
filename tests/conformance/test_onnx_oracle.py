"""ONNX's own node test cases, run through accel on each backend (`pytest --backend NAME`):
inputs, attributes and expected outputs from `onnx.backend.test.case.node.collect_testcases()`,
rtol 1e-3 / atol 1e-7."""
import pytest

pytest.importorskip("onnx")

from accel.conformance import onnx_oracle  # noqa: E402


def test_onnx_cases_cover_at_least_25_accel_ops(backend):
    rows = onnx_oracle.run_oracle(backend)
    print("\n" + onnx_oracle.table(rows))  # the mapping and the counts (pytest -s shows it)
    ran = onnx_oracle.ran_per_op(rows)
    assert len(ran) >= 25, f"only {len(ran)} accel ops got ONNX cases: {sorted(ran)}"
    assert all(r.reason for r in rows if r.status in ("skip", "fail")), "every skip says why"
    failures = [f"{r.name} ({r.onnx_op} -> {r.accel_op}): {r.reason}" for r in rows if r.status == "fail"]
    assert not failures, "\n".join(failures)


def test_the_comparison_uses_onnx_tolerances():
    import numpy as np

    e = np.array([1.0, 100.0], np.float32)
    assert onnx_oracle.compare(np.array([1.0009, 100.09], np.float32), e) == ""
    assert "outside" in onnx_oracle.compare(np.array([1.0011, 100.0], np.float32), e)
    assert "NaN" in onnx_oracle.compare(np.array([np.nan, 100.0], np.float32), e)
