"""The judge: one backend output against one reference, by the rules of docs/conformance.md.

Order: shape, then non-finite values (NaN positions exact; ±inf position and sign), then the
finite elements by the op's tolerance kind — bit-exact, elementwise |a-r| <= atol + rtol|r|, or
accumulating (NMSE and scaled max error). The reference is float64 and unrounded; it is rounded
to the output dtype only to decide which results must overflow (the correctly rounded value of
1e5 in float16 is +inf; in float8_e4m3fn, which has no infinity, it is NaN) and, for exact ops,
what the exact answer is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from accel.core.dtypes import DType
from accel.conformance.tolerances import Tolerance
from accel.precision.metrics import nmse as nmse_of


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""
    nmse: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    scaled_max: float | None = None
    worst_index: tuple[int, ...] | None = None
    worst_actual: float | int | bool | None = None
    worst_expected: float | int | bool | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["worst_index"] = list(self.worst_index) if self.worst_index is not None else None
        return out


def judge(actual: np.ndarray, reference, dtype: DType, tolerance: Tolerance) -> Verdict:
    """Judge `actual` (the backend's output, in `dtype`) against `reference`."""
    actual = np.asarray(actual)
    reference = np.asarray(reference)
    if actual.shape != reference.shape:
        return Verdict(False, f"shape {list(actual.shape)} differs from the reference's {list(reference.shape)}")
    with np.errstate(all="ignore"):  # inf - inf and friends are expected here
        if not dtype.is_floating:
            return _judge_discrete(actual, reference, dtype)
        return _judge_float(actual.astype(np.float64), reference.astype(np.float64), dtype, tolerance)


def _scalar(value):
    return value.item() if hasattr(value, "item") else value


def _index(flat: int, shape) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _judge_discrete(actual, reference, dtype: DType) -> Verdict:
    """Integers and bool: exact. The reference wraps to the dtype as two's complement does."""
    with np.errstate(invalid="ignore", over="ignore"):
        expected = reference.astype(dtype.numpy)
    a = actual.astype(dtype.numpy)
    wrong = a != expected
    if not wrong.any():
        return Verdict(True, max_abs=0.0)
    flat = int(np.flatnonzero(wrong.reshape(-1))[0])
    idx = _index(flat, a.shape)
    return Verdict(False, f"{int(wrong.sum())} of {wrong.size} elements differ (exact op)",
                   worst_index=idx, worst_actual=_scalar(a[idx]), worst_expected=_scalar(expected[idx]))


def _rounded(reference: np.ndarray, dtype: DType) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return reference.astype(dtype.numpy).astype(np.float64)


def _judge_float(a: np.ndarray, r: np.ndarray, dtype: DType, tol: Tolerance) -> Verdict:
    rr = _rounded(r, dtype)
    want_nan = np.isnan(r) | np.isnan(rr)
    want_inf = np.isinf(rr) & ~want_nan
    got_nan = np.isnan(a)
    bad = want_nan != got_nan
    if bad.any():
        idx = _index(int(np.flatnonzero(bad.reshape(-1))[0]), a.shape)
        what = "unexpected NaN" if got_nan[idx] else "missing NaN"
        return Verdict(False, f"{what} ({int(bad.sum())} NaN position(s) differ)",
                       worst_index=idx, worst_actual=float(a[idx]), worst_expected=float(r[idx]))
    got_inf = np.isinf(a)
    bad = (want_inf != got_inf) | (want_inf & (np.sign(a) != np.sign(rr)))
    if bad.any():
        idx = _index(int(np.flatnonzero(bad.reshape(-1))[0]), a.shape)
        return Verdict(False, f"infinities differ in position or sign ({int(bad.sum())} element(s))",
                       worst_index=idx, worst_actual=float(a[idx]), worst_expected=float(rr[idx]))
    finite = ~(want_nan | want_inf)
    if tol.kind == "exact":
        return _exact(a, rr, finite)
    metrics = _metrics(a, r, finite)
    if tol.kind == "elementwise":
        return _elementwise(a, r, finite, tol, metrics)
    return _accumulating(a, r, finite, tol, metrics, dtype)


def _metrics(a, r, finite) -> dict:
    diff = np.where(finite, a - r, 0.0)
    ref = np.where(finite, r, 0.0)
    err = np.abs(diff)
    count = int(finite.sum())
    sum_sq_ref = float(np.sum(ref * ref))
    nmse = nmse_of(diff + ref, ref)  # an all-zero reference: anything but exact zeros is inf
    if sum_sq_ref > 0:
        scaled = float(err.max()) / np.sqrt(sum_sq_ref / count) if count else 0.0
    else:
        scaled = 0.0 if nmse == 0 else float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref != 0, err / np.abs(ref), np.where(err > 0, np.inf, 0.0))
    return {"nmse": float(nmse), "scaled_max": float(scaled),
            "max_abs": float(err.max()) if err.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0, "err": err}


def _worst(a, r, order: np.ndarray, finite) -> dict:
    if not order.size or not finite.any():
        return {}
    flat = int(np.argmax(np.where(finite, order, -np.inf).reshape(-1)))
    idx = _index(flat, a.shape)
    return {"worst_index": idx, "worst_actual": float(a[idx]), "worst_expected": float(r[idx])}


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("nmse", "max_abs", "max_rel", "scaled_max")}


def _exact(a, rr, finite) -> Verdict:
    same = (a == rr) & (np.signbit(a) == np.signbit(rr))
    wrong = finite & ~same
    err = np.where(finite, np.abs(a - rr), 0.0)
    if not wrong.any():
        return Verdict(True, max_abs=0.0, max_rel=0.0, nmse=0.0, scaled_max=0.0)
    idx = _index(int(np.flatnonzero(wrong.reshape(-1))[0]), a.shape)
    return Verdict(False, f"{int(wrong.sum())} of {wrong.size} elements differ from the exact result "
                          f"(bit-exact op; -0.0 and +0.0 count as different)",
                   max_abs=float(err.max()), worst_index=idx, worst_actual=float(a[idx]),
                   worst_expected=float(rr[idx]))


def _elementwise(a, r, finite, tol: Tolerance, metrics: dict) -> Verdict:
    bound = tol.atol + tol.rtol * np.abs(r)
    err = metrics["err"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(finite, err / np.where(bound > 0, bound, np.inf), 0.0)
        ratio = np.where(finite & (bound == 0) & (err > 0), np.inf, ratio)
    over = finite & (err > bound)
    worst = _worst(a, r, ratio, finite)
    if over.any():
        return Verdict(False, f"{int(over.sum())} of {over.size} elements outside "
                              f"atol {tol.atol:g} + rtol {tol.rtol:g} x |ref|",
                       **_summary(metrics), **worst)
    return Verdict(True, **_summary(metrics), **worst)


def ulp(values: np.ndarray, dtype: DType) -> np.ndarray:
    """The spacing of `dtype` at each finite value (rounded to it first): one unit in the last place."""
    with np.errstate(over="ignore", invalid="ignore"):
        here = np.abs(values).astype(dtype.numpy)
    bits = here.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize])
    up = (bits + 1).view(dtype.numpy).astype(np.float64)  # sign bit is clear: no wrap-around
    down = np.where(bits > 0, bits - 1, bits).astype(bits.dtype).view(dtype.numpy).astype(np.float64)
    h = here.astype(np.float64)
    return np.where(np.isfinite(up), up - h, h - down)


def _accumulating(a, r, finite, tol: Tolerance, metrics: dict, dtype: DType) -> Verdict:
    worst = _worst(a, r, metrics["err"], finite)
    problems = []
    if not metrics["nmse"] <= tol.nmse:
        problems.append(f"NMSE {metrics['nmse']:.3g} > {tol.nmse:g}")
    if not metrics["scaled_max"] <= tol.scaled_max:
        problems.append(f"scaled max error {metrics['scaled_max']:.3g} > {tol.scaled_max:g}")
    if problems and _within_one_ulp(metrics["err"], r, finite, dtype):
        # The format's own floor: NMSE and scaled max cannot ask for better than rounding the
        # exact answer. Measured on the numpy reference backend (float32 accumulation, one
        # rounding): bf16 softmax over 1025 logits with an outlier has scaled max 0.065 > 0.06;
        # e4m3fn softmax outputs ~1/1025 are subnormals (NMSE 0.1); a 1x1 e4m3fn matmul has
        # NMSE = its relative rounding error squared, up to 0.004 > 0.003.
        return Verdict(True, "within one ulp of the exact result everywhere (format floor): "
                             + "; ".join(problems), **_summary(metrics), **worst)
    if problems:
        return Verdict(False, "; ".join(problems), **_summary(metrics), **worst)
    return Verdict(True, **_summary(metrics), **worst)


def _within_one_ulp(err, r, finite, dtype: DType) -> bool:
    return bool(np.all(~finite | (err <= ulp(np.where(finite, r, 0.0), dtype))))
