"""Run conformance cases on a backend: one `Row` per case.

The backend runs in strict mode, so a host fallback is reported as `unsupported` instead of being
silently used. Statuses: pass, fail, unsupported (the backend declares it cannot run the op in
that dtype), xfail (a known failure listed in the backend's expectations file) and xpass (a listed
failure that passes: strict, counted as a failure so the list stays true).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import accel
from accel import ops
from accel.conformance.expectations import Expectations
from accel.conformance.generators import Case, all_cases
from accel.conformance.judge import judge
from accel.conformance.tolerances import Tolerance, layout_tolerance, tolerance_for
from accel.core.backend import store
from accel.core.dtypes import as_dtype
from accel.core.errors import AccelError, UnsupportedError
from accel.core.spec import TensorSpec
from accel.core.tensor import Tensor

STATUSES = ("pass", "fail", "unsupported", "xfail", "xpass")


@dataclass
class Row:
    backend: str
    op: str
    case: str
    layout: str
    dtype: str
    params: dict
    shapes: list
    seed: int
    status: str
    reason: str = ""
    out_dtype: str | None = None
    path: str = ""
    thresholds: dict = field(default_factory=dict)
    verdict: dict = field(default_factory=dict)
    ms: float = 0.0

    @property
    def id(self) -> str:
        suffix = "" if self.layout == "contiguous" else f" layout={self.layout}"
        return f"{self.op}[{self.dtype}] {self.case}{suffix}"

    def as_dict(self) -> dict:
        out = {
            "backend": self.backend, "op": self.op, "case": self.case, "layout": self.layout,
            "dtype": self.dtype, "out_dtype": self.out_dtype, "params": self.params, "shapes": self.shapes,
            "seed": self.seed, "status": self.status, "reason": self.reason, "path": self.path,
            "thresholds": self.thresholds, "ms": round(self.ms, 3),
        }
        for key in ("nmse", "max_abs", "max_rel", "scaled_max", "worst_index", "worst_actual", "worst_expected"):
            out[key] = self.verdict.get(key)
        return out


@dataclass
class SuiteResult:
    backend: str
    reference: str
    rows: list[Row]
    seconds: float
    quick: bool
    model: dict | None = None
    ci: bool = False
    onnx: dict | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def passed(self) -> int:
        return self.count("pass")

    @property
    def failed(self) -> int:
        return (self.count("fail") + self.count("xpass") + (self.model or {}).get("failed", 0)
                + (self.onnx or {}).get("failed", 0))

    @property
    def skipped(self) -> int:
        return self.count("unsupported") + self.count("xfail")

    @property
    def ok(self) -> bool:
        return self.failed == 0


# --- placing inputs on a backend ---------------------------------------------------------------
def _filler(arr: np.ndarray) -> np.ndarray:
    """What sits between the elements of a strided input: NaN, so a wrong stride shows."""
    if arr.dtype == np.bool_:
        return ~arr
    if arr.dtype.kind in "iu":
        return np.full_like(arr, np.iinfo(arr.dtype).max)
    return np.full_like(arr, np.nan)


def place(arr, backend, layout: str = "contiguous"):
    """A backend tensor holding `arr`; with a layout, a non-contiguous view built by accel ops."""
    if arr is None:
        return None
    if isinstance(arr, list):
        return [place(a, backend, layout) for a in arr]
    if layout == "transposed" and arr.ndim >= 2:
        t = Tensor(store(backend, np.ascontiguousarray(np.swapaxes(arr, -1, -2))), backend)
        return ops.transpose(t, -1, -2)
    if layout == "strided" and arr.ndim >= 1 and arr.size:
        wide = np.stack([arr, _filler(arr)], axis=-1).reshape(arr.shape[:-1] + (2 * arr.shape[-1],))
        t = Tensor(store(backend, np.ascontiguousarray(wide)), backend)
        last = arr.ndim - 1
        return ops.slice(t, (last,), (0,), (wide.shape[-1],), (2,))
    return Tensor(store(backend, np.array(arr, order="C")), backend)  # keeps 0-d arrays 0-d


def _spec(arr):
    if arr is None:
        return None
    if isinstance(arr, list):
        return [_spec(a) for a in arr]
    return TensorSpec(tuple(arr.shape), as_dtype(arr.dtype))


def _shapes(inputs) -> list:
    out = []
    for a in inputs:
        if isinstance(a, list):
            out.append([list(x.shape) for x in a])
        else:
            out.append(None if a is None else list(a.shape))
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "name") and hasattr(value, "kind"):  # a DType
        return value.name
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _upcast(arr):
    if arr is None:
        return None
    if isinstance(arr, list):
        return [_upcast(a) for a in arr]
    return arr.astype(np.float64) if arr.dtype.kind == "f" or as_dtype(arr.dtype).is_floating else arr


def _attrs(case: Case) -> dict:
    merged = {**case.op.attrs, **case.attrs}
    merged.pop("backend", None)
    return merged


def reference_output(case: Case) -> np.ndarray:
    """The op's numpy float64 reference on the (float64-upcast) case inputs."""
    with np.errstate(all="ignore"):
        return np.asarray(case.op.reference(*[_upcast(a) for a in case.inputs], **_attrs(case)))


def run_on(backend, case: Case, layout: str = "contiguous") -> np.ndarray:
    """Run the case's op on `backend`; the output as a host numpy array (in its dtype)."""
    args = [place(a, backend, layout) for a in case.inputs]
    attrs = dict(case.attrs)
    if "backend" in case.op.attrs:
        attrs["backend"] = backend
    out = case.op(*args, **attrs)
    return out, backend.to_numpy(out.data)


def path_of(backend, case: Case) -> str:
    op = case.op
    if backend.supports(op, case.dtype):
        return "native"
    if op.decompose is not None:
        return "decomposed"
    return "fallback"


# --- one case ----------------------------------------------------------------------------------
def run_case(backend, case: Case, *, against=None, expectations: Expectations | None = None) -> Row:
    start = time.perf_counter()
    row = Row(backend=backend.spec, op=case.op.name, case=case.label, layout=case.layout,
              dtype=case.dtype.name, params=_jsonable(case.attrs), shapes=_shapes(case.inputs),
              seed=case.seed, status="fail", path=path_of(backend, case))
    try:
        expected = case.op.infer(*[_spec(a) for a in case.inputs], **_attrs(case))
        row.out_dtype = expected.dtype.name
        tol = tolerance_for(case.op, expected.dtype.name, backend.name)
        row.thresholds = tol.as_dict()
        status, reason, verdict = _evaluate(backend, case, expected, tol, against)
    except Exception as exc:  # the suite itself must not stop on one broken case
        status, reason, verdict = "fail", f"suite error: {type(exc).__name__}: {exc}", None
    row.status, row.reason = status, reason
    if verdict is not None:
        row.verdict = _jsonable(verdict.as_dict())
    if expectations is not None:
        known = expectations.match(backend, row)
        if known is not None and row.status in ("pass", "fail"):
            row.status = "xpass" if row.status == "pass" else "xfail"
            note = f"expected failure: {known.reason}"
            row.reason = f"{note}; but it passes (remove the entry)" if row.status == "xpass" \
                else f"{row.reason} [{note}]"
    row.ms = (time.perf_counter() - start) * 1e3
    return row


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n")[0]


def _evaluate(backend, case: Case, expected, tol: Tolerance, against):
    try:
        out, actual = run_on(backend, case, case.layout)
    except UnsupportedError as exc:
        return "unsupported", _first_line(exc), None
    except AccelError as exc:
        return "fail", f"error: {type(exc).__name__}: {_first_line(exc)}", None
    except Exception as exc:
        return "fail", f"crash (not an AccelError): {type(exc).__name__}: {_first_line(exc)}", None
    if out.dtype is not expected.dtype:
        return "fail", f"returned {out.dtype.name}, the op's rule says {expected.dtype.name}", None
    if case.layout != "contiguous":
        _, contiguous = run_on(backend, case)
        verdict = judge(actual, contiguous, expected.dtype, layout_tolerance(tol))
        reason = "" if verdict.passed else f"{case.layout} input differs from the contiguous result: {verdict.reason}"
        return ("pass" if verdict.passed else "fail"), reason, verdict
    if against is None:
        reference = reference_output(case)
    else:
        try:
            _, reference = run_on(against, case)
        except UnsupportedError as exc:
            return "unsupported", f"the comparison backend {against.spec} cannot run it: {_first_line(exc)}", None
    verdict = judge(actual, reference, expected.dtype, tol)
    return ("pass" if verdict.passed else "fail"), verdict.reason, verdict


# --- the suite ---------------------------------------------------------------------------------
def select_ops(names=None) -> list:
    if not names:
        return list(ops.ALL_OPS)
    return [ops.get_op(n) for n in names]


# The CI tier runs a decomposed composite in these dtypes only (see `in_ci_tier`).
CI_COMPOSITE_DTYPES = ("float32", "bfloat16")


def in_ci_tier(backend, op, dtype) -> bool:
    """The CI subset (pytest's default): every op in every dtype, without the big sizes; in an
    op's primary dtype (float32) every quick case, in the others the value edge cases (special,
    subnormal, large, masked, ignored targets ...), the layouts and every third shape case. A
    composite the backend decomposes runs in float32 and bfloat16 only: its decomposition is
    built from primitives tested here in every dtype, and is itself checked in every dtype on
    the reference backend (tests/conformance/test_meta.py). What CI leaves out: big sizes, two
    thirds of the shape sweep outside float32, decomposed composites outside float32/bfloat16."""
    return op.is_primitive or backend.supports(op, dtype) or dtype.name in CI_COMPOSITE_DTYPES


def run_suite(backend, *, op_names=None, dtype_names=None, quick: bool = False, ci: bool = False,
              against=None, expectations: Expectations | None = None, progress: bool = False) -> SuiteResult:
    """Every case of the selected ops and dtypes on `backend` (a spec or Backend).

    quick: leave out the big sizes; ci: also the decomposed composites outside float32/bfloat16.
    """
    backend = accel.get_backend(backend)
    against = accel.get_backend(against) if against is not None else None
    if expectations is None:
        expectations = Expectations.for_backend(backend)
    dtypes = [as_dtype(d) for d in dtype_names] if dtype_names else None
    quick = quick or ci
    cases = [c for c in all_cases(select_ops(op_names), dtypes, quick=quick, sample_secondary=ci)
             if not ci or in_ci_tier(backend, c.op, c.dtype)]
    start = time.perf_counter()
    rows = []
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc=f"conformance {backend.spec}", unit="case", leave=False)
    with accel.strict(), np.errstate(all="ignore"):
        for case in iterator:
            rows.append(run_case(backend, case, against=against, expectations=expectations))
    reference = f"backend {against.spec}" if against is not None else "numpy float64 reference"
    return SuiteResult(backend.spec, reference, rows, time.perf_counter() - start, quick, ci=ci)
