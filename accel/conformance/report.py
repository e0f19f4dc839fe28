"""Reports of a conformance run: JSON (one row per case), Markdown, and the terminal matrix.

The terminal output ends with exactly `N passed, N failed, N skipped`: failed includes strict
xpasses (and a failed model check), skipped is unsupported + xfail; unsupported is never passed.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
from collections import defaultdict

import numpy as np

import accel
from accel import ops
from accel.conformance.runner import SuiteResult

DTYPE_ORDER = [d.name for d in accel.ALL_DTYPES]
SHORT = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
         "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "int8": "i8", "int32": "i32", "int64": "i64",
         "bool": "bool"}


def _subset(result: SuiteResult) -> str:
    if result.ci:
        return "CI subset (no big sizes; decomposed composites in float32/bfloat16 only)"
    return "quick subset (no big sizes)" if result.quick else "full suite"


def closing_line(result: SuiteResult) -> str:
    return f"{result.passed} passed, {result.failed} failed, {result.skipped} skipped"


def _clean(value):
    """JSON has no NaN/inf: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def as_json(result: SuiteResult) -> dict:
    return _clean({
        "backend": result.backend,
        "reference": result.reference,
        "accel_version": accel.__version__,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "subset": "ci" if result.ci else ("quick" if result.quick else "full"),
        "seconds": round(result.seconds, 2),
        "summary": summary(result),
        "rows": [r.as_dict() for r in result.rows],
        "model": result.model,
        "onnx": {k: v for k, v in (result.onnx or {}).items() if k != "table"} or None,
    })


def write_json(result: SuiteResult, path: str) -> None:
    with open(path, "w") as f:
        json.dump(as_json(result), f, indent=1)
        f.write("\n")


def summary(result: SuiteResult) -> dict:
    out = {s: result.count(s) for s in ("pass", "fail", "unsupported", "xfail", "xpass")}
    out.update(passed=result.passed, failed=result.failed, skipped=result.skipped, cases=len(result.rows))
    return out


# --- the op x dtype matrix -------------------------------------------------------------------
def _cells(result: SuiteResult) -> tuple[list[str], list[str], dict]:
    cells: dict = defaultdict(lambda: defaultdict(int))
    for row in result.rows:
        cells[(row.op, row.dtype)][row.status] += 1
    op_order = [op.name for op in ops.ALL_OPS]
    names = sorted({op for op, _ in cells}, key=lambda n: op_order.index(n) if n in op_order else 999)
    dtypes = [d for d in DTYPE_ORDER if any(dt == d for _, dt in cells)]
    return names, dtypes, cells


def cell_text(counts: dict | None) -> str:
    if not counts:
        return "·"
    total = sum(counts.values())
    bad = counts.get("fail", 0) + counts.get("xpass", 0)
    if bad:
        return f"✗ {bad}/{total}"
    if counts.get("pass", 0) == total:
        return f"✓ {total}"
    if counts.get("unsupported", 0) == total:
        return "unsup"
    return f"~ {counts.get('pass', 0)}/{total}"


LEGEND = ("✓ n: all n cases pass · ✗ k/n: k cases fail · ~ p/n: p pass, the rest unsupported or "
          "expected failures · unsup: the backend declares it cannot run it · '·': not applicable")


def matrix(result: SuiteResult) -> str:
    names, dtypes, cells = _cells(result)
    width = max([len(n) for n in names] + [4])
    col = 9
    lines = [" " * width + " " + "".join(SHORT[d].rjust(col) for d in dtypes)]
    for name in names:
        lines.append(name.ljust(width) + " " + "".join(cell_text(cells.get((name, d))).rjust(col) for d in dtypes))
    return "\n".join(lines)


def terminal(result: SuiteResult, *, max_failures: int = 30) -> str:
    """The matrix, the failing cases, and the closing line (last)."""
    out = [f"accel conformance: {result.backend} against the {result.reference} "
           f"({_subset(result)}, {len(result.rows)} cases, {result.seconds:.1f}s)",
           "", matrix(result), "", LEGEND]
    bad = [r for r in result.rows if r.status in ("fail", "xpass")]
    if bad:
        out += ["", f"failures ({len(bad)}):"]
        for row in bad[:max_failures]:
            out.append(f"  {row.status.upper()} {row.id} (seed {row.seed}): {row.reason}{_worst(row)}")
        if len(bad) > max_failures:
            out.append(f"  ... {len(bad) - max_failures} more (see --json / --markdown)")
    if result.model is not None:
        out += ["", model_text(result.model)]
    if result.onnx is not None:
        out += ["", "ONNX node cases (external oracle, rtol 1e-3 / atol 1e-7):", result.onnx["table"]]
    unsup, xfail, xpass = result.count("unsupported"), result.count("xfail"), result.count("xpass")
    out += ["", f"({unsup} unsupported, {xfail} expected failures, {xpass} unexpected passes)",
            closing_line(result)]
    return "\n".join(out)


def _worst(row) -> str:
    v = row.verdict
    if v.get("worst_index") is None:
        return ""
    return f" [worst at {tuple(v['worst_index'])}: got {v.get('worst_actual')}, want {v.get('worst_expected')}]"


def model_text(model: dict) -> str:
    if model.get("skipped"):
        return f"model: skipped ({model['skipped']})"
    lines = [f"model {model.get('model')}: {model.get('status')}"]
    for run in model.get("runs", []):
        lines.append(f"  {run['dtype']}: logits NMSE {run['nmse']:.3g}, max abs {run['max_abs']:.3g}, "
                     f"greedy agreement {run['greedy_agreement']:.2%}"
                     + (f", KL {run['kl']:.3g}" if run.get("kl") is not None else "")
                     + f" -> {run['status']}" + (f" ({run['reason']})" if run.get("reason") else ""))
    return "\n".join(lines)


# --- Markdown ----------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown(result: SuiteResult, *, max_rows: int = 300) -> str:
    s = summary(result)
    lines = [
        f"# accel conformance report: `{result.backend}`", "",
        f"- compared with: {result.reference}",
        f"- subset: {_subset(result)}; {len(result.rows)} cases in {result.seconds:.1f}s",
        f"- accel {accel.__version__}, Python {platform.python_version()}, numpy {np.__version__}",
        f"- generated {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "",
        f"**{closing_line(result)}** ({s['unsupported']} unsupported, {s['xfail']} expected failures, "
        f"{s['xpass']} unexpected passes)", "",
        "## op × dtype", "",
    ]
    names, dtypes, cells = _cells(result)
    lines.append("| op | " + " | ".join(dtypes) + " |")
    lines.append("|---|" + "---|" * len(dtypes))
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell_text(cells.get((name, d))) for d in dtypes) + " |")
    lines += ["", LEGEND, ""]
    for title, statuses in (("Failures", ("fail", "xpass")), ("Expected failures", ("xfail",)),
                            ("Unsupported", ("unsupported",))):
        rows = [r for r in result.rows if r.status in statuses]
        if not rows:
            continue
        lines += [f"## {title} ({len(rows)})", "",
                  "| case | seed | status | reason | worst index | got | want | NMSE | scaled max |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows[:max_rows]:
            v = r.verdict
            idx = tuple(v["worst_index"]) if v.get("worst_index") is not None else ""
            lines.append(f"| `{r.id}` | {r.seed} | {r.status} | {r.reason.replace('|', '/')} | {idx} | "
                         f"{_fmt(v.get('worst_actual'))} | {_fmt(v.get('worst_expected'))} | "
                         f"{_fmt(v.get('nmse'))} | {_fmt(v.get('scaled_max'))} |")
        if len(rows) > max_rows:
            lines.append(f"\n... {len(rows) - max_rows} more in the JSON report.")
        lines.append("")
    if result.model is not None:
        lines += ["## Model", "", "```", model_text(result.model), "```", ""]
    if result.onnx is not None:
        lines += ["## ONNX node cases", "", f"{result.onnx['ran']} ONNX cases ran for {result.onnx['ops']} accel ops, "
                  f"{result.onnx['failed']} failed.", "", "```", result.onnx["table"], "```", ""]
    lines += ["## How cases are judged", "",
              "Inputs are rounded to the dtype under test and the same values go to the reference "
              "(numpy float64). Non-finite values first (NaN positions exact, ±inf position and sign, "
              "where the correctly rounded reference overflows), then elementwise |a−r| ≤ atol + rtol·|r|, "
              "or for accumulating ops NMSE and max|a−r|/rms(r) (a result within one ulp of the exact "
              "answer everywhere passes: the format's own floor), or bit-exact. Transposed and strided "
              "inputs must reproduce the contiguous result (bit-exact; accumulating ops within their "
              "tolerance). Thresholds: `accel/conformance/tolerances.py`.", ""]
    return "\n".join(lines)


def write_markdown(result: SuiteResult, path: str) -> None:
    with open(path, "w") as f:
        f.write(markdown(result))
