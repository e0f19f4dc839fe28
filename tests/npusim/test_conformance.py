"""Conformance on npusim: every case the chip declares it can run must pass against numpy
float64 at the chip's precision; every case it cannot run is counted as unsupported, never as
passed. Runs in strict mode with the `error` dtype policy, so nothing runs on the host unseen.

Uses the suite's own case generators, judge and tolerances (accel/conformance); the full suite
also runs on npusim through `pytest tests --backend npusim` and `accel conformance`.
"""
from collections import Counter

import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.npusim import NpuSimBackend

generators = pytest.importorskip("accel.conformance.generators")
judge_module = pytest.importorskip("accel.conformance.judge")
tolerances = pytest.importorskip("accel.conformance.tolerances")


def _tested_ops():
    # collectives are the identity in one process (no kernel runs, so no dtype is judged here);
    # tests/distributed/test_collectives.py runs them on npusim across real ranks
    return [op for op in ops.ALL_OPS if op.inputs and (op.cases or {}).get("family") in generators.FAMILIES
            and op.cases.get("family") != "collective"]


def _upcast(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_upcast(v) for v in x]
    return x.astype(np.float64) if x.dtype.kind == "f" or x.dtype.kind == "V" else x


_REFERENCE_PASSES: dict[str, bool] = {}


def reference_passes(case) -> bool:
    """npusim is held to what the reference backend achieves: a case the reference backend itself
    rejects or fails belongs to the suite's own expectations, not to npusim."""
    if case.id not in _REFERENCE_PASSES:
        _REFERENCE_PASSES[case.id] = run_case(accel.reference_backend(), case, strict=False)[0] == "pass"
    return _REFERENCE_PASSES[case.id]


def run_case(chip, case, strict: bool = True) -> tuple[str, str]:
    def device(x):
        if x is None:
            return None
        if isinstance(x, (list, tuple)):
            return [device(v) for v in x]
        return accel.from_numpy(x, backend=chip)

    try:
        with accel.strict(strict):
            out = case.op(*[device(x) for x in case.inputs], **case.attrs)
    except accel.UnsupportedError as exc:
        return "unsupported", str(exc).splitlines()[0]
    except accel.AccelError as exc:
        return "fail", f"raised {type(exc).__name__}: {str(exc).splitlines()[0]}"
    with np.errstate(all="ignore"):
        reference = case.op.reference(*[_upcast(x) for x in case.inputs], **case.attrs)
    tolerance = tolerances.tolerance_for(case.op, out.dtype.name, "npusim")
    verdict = judge_module.judge(out.numpy(), reference, out.dtype, tolerance)
    return ("pass" if verdict.passed else "fail"), verdict.reason


@pytest.mark.parametrize("profile", ["ascend910b", "minimal"])
def test_conformance_cases_pass_or_are_unsupported(profile):
    chip = NpuSimBackend(profile)
    tally, failures, outcome = Counter(), [], {}
    for op in _tested_ops():
        for dtype in generators.case_dtypes(op):
            for case in generators.cases_for(op, dtype, quick=True):
                if case.layout != "contiguous" or not reference_passes(case):
                    continue
                status, reason = run_case(chip, case)
                tally[status] += 1
                outcome.setdefault((op.name, dtype.name), set()).add(status)
                if status == "fail":
                    failures.append(f"{case.id}: {reason}")
    assert not failures, "\n".join(failures[:20])
    assert tally["pass"] > 0 and tally["unsupported"] > 0
    # what the profile declares decides the outcome: never a pass for a dtype it does not run
    for (name, dtype), statuses in outcome.items():
        if dtype in ("float64", "float8_e4m3fn", "float8_e5m2"):
            assert statuses == {"unsupported"}, (name, dtype, statuses)
    if profile == "minimal":
        assert outcome[("matmul", "float32")] == {"unsupported"}
        assert outcome[("matmul", "bfloat16")] == {"pass"}
    else:
        assert outcome[("matmul", "float32")] == {"pass"}
