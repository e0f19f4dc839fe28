"""The judge itself, on hand-computed numbers: just inside and just outside each tolerance."""
import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops
from accel.conformance.judge import judge, ulp
from accel.conformance.tolerances import Override, Tolerance, tolerance_for

F32_ELEMENTWISE = tolerance_for(ops.exp, "float32")  # the table's float32 row: rtol 1.3e-6, atol 1e-5
F32_ACCUMULATING = tolerance_for(ops.matmul, "float32")  # nmse 1e-10, scaled max 1e-5
EXACT = Tolerance("exact")


def f32(*values):
    return np.array(values, dtype=np.float32)


# --- elementwise: |a - r| <= atol + rtol |r| ------------------------------------------------
def test_elementwise_just_inside_and_just_outside():
    # r = 2: bound = 1e-5 + 1.3e-6 * 2 = 1.26e-5. float32 spacing at 2 is 2.38e-7, so
    # 2 + 52 ulps = 2 + 1.2398e-5 is inside and 2 + 54 ulps = 2 + 1.2875e-5 is outside.
    r = np.array([2.0])
    ulp2 = 2.0 ** -22
    inside = f32(2.0 + 52 * ulp2)
    outside = f32(2.0 + 54 * ulp2)
    assert float(inside[0]) - 2.0 == pytest.approx(1.2398e-5, rel=1e-4)
    assert judge(inside, r, accel.float32, F32_ELEMENTWISE).passed
    verdict = judge(outside, r, accel.float32, F32_ELEMENTWISE)
    assert not verdict.passed
    assert verdict.worst_index == (0,) and verdict.worst_expected == 2.0
    assert "outside atol" in verdict.reason


def test_elementwise_atol_dominates_near_zero():
    r = np.array([0.0, 0.0])
    assert judge(f32(9.9e-6, -9.9e-6), r, accel.float32, F32_ELEMENTWISE).passed
    assert not judge(f32(0.0, 1.01e-5), r, accel.float32, F32_ELEMENTWISE).passed


def test_elementwise_reports_metrics():
    r = np.array([1.0, 2.0, 4.0])
    a = f32(1.0, 2.0, 4.0 + 2.0 ** -21)  # one ulp at 4 = 4.77e-7
    v = judge(a, r, accel.float32, F32_ELEMENTWISE)
    assert v.passed
    assert v.max_abs == pytest.approx(4.76837e-7, rel=1e-5)
    assert v.max_rel == pytest.approx(4.76837e-7 / 4, rel=1e-5)
    assert v.worst_index == (2,)


# --- non-finite values first ----------------------------------------------------------------
def test_nan_positions_must_match():
    r = np.array([1.0, np.nan, 3.0])
    assert judge(f32(1.0, np.nan, 3.0), r, accel.float32, F32_ELEMENTWISE).passed
    v = judge(f32(np.nan, 1.0, 3.0), r, accel.float32, F32_ELEMENTWISE)
    assert not v.passed and "unexpected NaN" in v.reason and v.worst_index == (0,)
    v = judge(f32(1.0, 2.0, 3.0), r, accel.float32, F32_ELEMENTWISE)
    assert not v.passed and "missing NaN" in v.reason


def test_infinity_position_and_sign():
    r = np.array([np.inf, -np.inf, 1.0])
    assert judge(f32(np.inf, -np.inf, 1.0), r, accel.float32, F32_ACCUMULATING).passed
    assert not judge(f32(-np.inf, -np.inf, 1.0), r, accel.float32, F32_ACCUMULATING).passed
    assert not judge(f32(np.inf, 1.0, 1.0), r, accel.float32, F32_ACCUMULATING).passed


def test_overflow_follows_the_output_format():
    # 7e4 is above float16's largest finite value (65504) plus half an ulp (16): it rounds to inf.
    r = np.array([7e4])
    tol = tolerance_for(ops.add, "float16")
    assert judge(np.array([np.inf], np.float16), r, accel.float16, tol).passed
    assert not judge(np.array([65504.0], np.float16), r, accel.float16, tol).passed
    # float8_e4m3fn has no infinity: 500 (> 448 + half an ulp of 32) becomes NaN, never 448.
    e4m3 = ml_dtypes.float8_e4m3fn
    tol = tolerance_for(ops.add, "float8_e4m3fn")
    assert judge(np.array([np.nan], e4m3), np.array([500.0]), accel.float8_e4m3fn, tol).passed
    v = judge(np.array([448.0], e4m3), np.array([500.0]), accel.float8_e4m3fn, tol)
    assert not v.passed and "missing NaN" in v.reason
    # 460 is within half an ulp of 448: it rounds to 448 and must not be NaN.
    assert judge(np.array([448.0], e4m3), np.array([460.0]), accel.float8_e4m3fn, tol).passed


# --- accumulating: NMSE and scaled max ------------------------------------------------------
def test_accumulating_scaled_max_just_inside_and_outside():
    # r = [1, 2, 3, 4]: sum r^2 = 30, rms = sqrt(7.5) = 2.7386. An error e on one element gives
    # NMSE e^2/30 and scaled max e/2.7386. Limit 1e-5 -> e = 2.7386e-5.
    r = np.array([1.0, 2.0, 3.0, 4.0])
    inside = np.array([1.0, 2.0, 3.0, 4.0 + 2.6e-5])
    outside = np.array([1.0, 2.0, 3.0, 4.0 + 2.9e-5])
    v = judge(inside, r, accel.float64, F32_ACCUMULATING)
    assert v.passed
    assert v.nmse == pytest.approx(2.6e-5 ** 2 / 30, rel=1e-6)
    assert v.scaled_max == pytest.approx(2.6e-5 / np.sqrt(7.5), rel=1e-6)
    v = judge(outside, r, accel.float64, F32_ACCUMULATING)
    assert not v.passed and "scaled max" in v.reason and "NMSE" not in v.reason


def test_accumulating_nmse_just_inside_and_outside():
    # Spread error: every element off by 1e-5 relative: NMSE = 1e-10 exactly at the limit.
    r = np.array([1.0, -2.0, 3.0, -4.0])
    inside = judge(r * (1 + 0.99e-5), r, accel.float64, Tolerance("accumulating", nmse=1e-10, scaled_max=1.0))
    outside = judge(r * (1 + 1.01e-5), r, accel.float64, Tolerance("accumulating", nmse=1e-10, scaled_max=1.0))
    assert inside.passed and inside.nmse == pytest.approx(0.99e-5 ** 2, rel=1e-6)
    assert not outside.passed and "NMSE" in outside.reason


def test_all_zero_reference_needs_exact_zeros():
    r = np.zeros(3)
    assert judge(np.zeros(3), r, accel.float64, F32_ACCUMULATING).passed
    assert not judge(np.array([0.0, 1e-30, 0.0]), r, accel.float64, F32_ACCUMULATING).passed


def test_one_ulp_floor_for_accumulating_ops():
    # One element: NMSE is the relative error squared. In float8_e4m3fn, 0.0087890625 (a
    # subnormal, spacing 2^-9) correctly rounds to 0.0078125: NMSE 0.0123 > 3e-3, yet no kernel
    # can do better, so it passes; two ulps off does not.
    tol = tolerance_for(ops.matmul, "float8_e4m3fn")
    r = np.array([0.0087890625])
    e4m3 = ml_dtypes.float8_e4m3fn
    v = judge(np.array([0.0078125], e4m3), r, accel.float8_e4m3fn, tol)
    assert v.passed and "format floor" in v.reason
    assert not judge(np.array([0.0078125 - 2 * 2.0 ** -9], e4m3), r, accel.float8_e4m3fn, tol).passed


def test_ulp_values():
    assert ulp(np.array([1.0]), accel.float32)[0] == 2.0 ** -23
    assert ulp(np.array([1.0]), accel.bfloat16)[0] == 2.0 ** -7
    assert ulp(np.array([448.0]), accel.float8_e4m3fn)[0] == 32.0  # the top: spacing below it
    assert ulp(np.array([0.0]), accel.float16)[0] == 2.0 ** -24


# --- exact ------------------------------------------------------------------------------------
def test_exact_is_bit_exact_including_signed_zero():
    r = np.array([0.0, 1.5, -2.0])
    assert judge(f32(0.0, 1.5, -2.0), r, accel.float32, EXACT).passed
    v = judge(f32(-0.0, 1.5, -2.0), r, accel.float32, EXACT)
    assert not v.passed and v.worst_index == (0,)
    assert not judge(f32(0.0, 1.5, np.nextafter(np.float32(-2.0), np.float32(0))), r, accel.float32, EXACT).passed


def test_exact_rounds_the_reference_to_the_output_dtype():
    # full(3.14159, bfloat16) must give bf16(3.14159) = 3.140625, bit for bit.
    r = np.array([3.14159])
    assert judge(np.array([3.140625], ml_dtypes.bfloat16), r, accel.bfloat16, EXACT).passed
    assert not judge(np.array([3.15625], ml_dtypes.bfloat16), r, accel.bfloat16, EXACT).passed


def test_integers_are_exact_and_wrap_like_twos_complement():
    assert judge(np.array([1, 2], np.int32), np.array([1, 2]), accel.int32, EXACT).passed
    v = judge(np.array([1, 3], np.int32), np.array([1, 2]), accel.int32, EXACT)
    assert not v.passed and v.worst_index == (1,) and v.worst_actual == 3 and v.worst_expected == 2
    # an int8 sum of 100 + 100 wraps to -56 on every backend; the reference is taken modulo 256
    assert judge(np.array([-56], np.int8), np.array([200]), accel.int8, EXACT).passed


def test_shape_mismatch_fails():
    v = judge(np.zeros((2, 3), np.float32), np.zeros((3, 2)), accel.float32, F32_ELEMENTWISE)
    assert not v.passed and "shape" in v.reason


# --- tolerance tables -------------------------------------------------------------------------
def test_tolerance_tables_match_conformance_md():
    assert tolerance_for(ops.exp, "float16") == Tolerance("elementwise", rtol=1e-3, atol=1e-5)
    assert tolerance_for(ops.exp, "bfloat16") == Tolerance("elementwise", rtol=1.6e-2, atol=1e-5)
    assert tolerance_for(ops.matmul, "bfloat16") == Tolerance("accumulating", nmse=5e-5, scaled_max=6e-2)
    assert tolerance_for(ops.softmax, "float8_e4m3fn") == Tolerance("accumulating", nmse=3e-3, scaled_max=0.5)
    assert tolerance_for(ops.gather, "float32").kind == "exact"
    assert tolerance_for(ops.add, "int32").kind == "exact"


def test_override_entries_take_precedence_per_backend():
    special = Tolerance("accumulating", nmse=1e-8, scaled_max=1e-4)
    table = (Override("matmul", "float32", "vendorchip", special, "measured: ..."),)
    assert tolerance_for(ops.matmul, "float32", "vendorchip", overrides=table) is special
    assert tolerance_for(ops.matmul, "float32", "torch", overrides=table).nmse == 1e-10
    assert tolerance_for(ops.matmul, "float16", "vendorchip", overrides=table).nmse == 1e-6


def test_docs_conformance_md_carries_the_numbers_of_tolerances_py():
    """The tolerance tables are written in docs/conformance.md and live in code once, in
    accel/conformance/tolerances.py: the two must say the same."""
    import re
    from pathlib import Path

    from accel.conformance.tolerances import ACCUMULATING, ELEMENTWISE

    text = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()

    def number(cell: str) -> float:
        cell = cell.strip()
        return 2.0 ** float(cell[2:]) if cell.startswith("2^") else float(cell)

    elementwise, accumulating = {}, {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[a-z0-9_, ]+", cells[0]) and cells[1][:1].isdigit():
            for dtype in cells[0].split(", "):
                elementwise[dtype] = (number(cells[1]), number(cells[2]))
        elif len(cells) == 3 and re.fullmatch(r"[a-z0-9_]+", cells[0]) and cells[1][:1].isdigit():
            accumulating[cells[0]] = (number(cells[1]), number(cells[2]))
    assert elementwise == ELEMENTWISE
    assert accumulating == ACCUMULATING
