"""The backend-parametrised conformance tests, shipped in the package so a vendor runs them on
its own plugin without copying anything:

    pytest -p accel.testing --pyargs accel.conformance.test_backend --backend myvendor:npu \
        [--conformance-full] [--accel-expectations FILE]

One pytest item per op x dtype (the CI tier by default, see `runner.in_ci_tier`;
`--conformance-full` runs every case), and the model-level check. A case passes, is unsupported (the
backend declares it cannot run it) or is a listed expected failure; anything else fails.
"""
from __future__ import annotations

import pytest

from accel import ops
from accel.conformance.generators import case_dtypes

OP_DTYPES = [(op.name, d.name) for op in ops.ALL_OPS for d in case_dtypes(op)]


def _bad_rows_text(rows) -> str:
    lines = [f"{r.status.upper()} {r.id} (seed {r.seed}): {r.reason}" for r in rows[:20]]
    if len(rows) > 20:
        lines.append(f"... {len(rows) - 20} more")
    return "\n".join(lines)


@pytest.mark.parametrize("op_name,dtype_name", OP_DTYPES, ids=[f"{o}-{d}" for o, d in OP_DTYPES])
def test_op_conforms(backend, op_name, dtype_name, request):
    import accel
    from accel.conformance.runner import in_ci_tier, run_suite

    full = request.config.getoption("--conformance-full", default=False)
    if not full and not in_ci_tier(backend, ops.get_op(op_name), accel.as_dtype(dtype_name)):
        pytest.skip(f"CI tier: {backend.spec} decomposes {op_name}; its decomposition runs in float32/bfloat16 "
                    f"here and in every dtype on the reference backend (use --conformance-full)")
    from accel.conformance.expectations import Expectations

    path = request.config.getoption("--accel-expectations", default=None)
    result = run_suite(backend, op_names=[op_name], dtype_names=[dtype_name], quick=not full, ci=not full,
                       expectations=Expectations.load(path) if path else None)
    bad = [r for r in result.rows if r.status in ("fail", "xpass")]
    assert result.rows, f"{op_name}[{dtype_name}] generated no cases"
    assert not bad, f"{len(bad)} of {len(result.rows)} cases fail on {backend.spec}:\n{_bad_rows_text(bad)}"


def test_model_conforms(backend):
    """The bundled model's logits against the reference (float32 and bfloat16)."""
    from accel.conformance.model_check import check_model

    report = check_model(backend, quick=True)
    if report.get("skipped"):
        pytest.skip(report["skipped"])
    bad = [r for r in report["runs"] if r["status"] == "fail"]
    assert not bad and report.get("status") == "pass", report
