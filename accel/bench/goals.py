"""The benchmark goals, judged from one run's figures (ratios measured side by side)."""
from __future__ import annotations

import statistics

GOALS = {
    "compiled_decode_vs_hf": 1.5,      # best compiled backend decodes >= 1.5x Hugging Face
    "eager_torch_vs_hf": 1 / 1.1,      # eager torch backend within 1.1x of Hugging Face
    "decode_pct_of_bandwidth": 50.0,   # decode reaches >= 50% of the bandwidth bound
    "dispatch_overhead_us": 1.0,       # <= 1 µs per op
    "train_compiled_torch_vs_hf": 1.0,  # torch:cpu compiled training step >= HF + torch autograd
    "train_eager_torch_vs_hf": 0.85,    # torch:cpu eager training step >= 0.85x of it
}


def judge(results: dict) -> list[dict]:
    out = []
    model = results.get("model")
    if model:
        rows = [r for r in model["rows"] if "skipped" not in r]
        decodes = [m for m in model["measurements"] if m.startswith("decode")]
        for dtype in sorted({r["dtype"] for r in rows}):
            for label in decodes:
                compiled = _best(rows, dtype, label, lambda r: r["mode"] == "compiled", "ratio_to_hf")
                out.append(_goal(f"best compiled backend {label} {dtype} vs HF", compiled, ">=",
                                 GOALS["compiled_decode_vs_hf"], "x"))
                torch_eager = _best(rows, dtype, label,
                                    lambda r: r["mode"] == "eager" and r["backend"].startswith("torch:"), "ratio_to_hf")
                out.append(_goal(f"eager torch {label} {dtype} vs HF", torch_eager, ">=",
                                 GOALS["eager_torch_vs_hf"], "x"))
                share = _best(rows, dtype, label, lambda r: r["mode"] != "hf", "pct_of_bandwidth_bound")
                out.append(_goal(f"best {label} {dtype} share of the bandwidth bound", share, ">=",
                                 GOALS["decode_pct_of_bandwidth"], "%"))
    train = [r for r in results.get("train", {}).get("rows", []) if r.get("ratio_to_reference")]
    if train:
        for mode, goal in (("compiled", "train_compiled_torch_vs_hf"), ("eager", "train_eager_torch_vs_hf")):
            found = [(r["ratio_to_reference"], r["name"]) for r in train
                     if r["mode"] == mode and r["backend"].startswith("torch:")]
            out.append(_goal(f"training step, best torch {mode} row vs HF + torch autograd",
                             max(found) if found else (None, None), ">=", GOALS[goal], "x"))
    for backend in sorted({r["backend"] for r in results.get("ops", [])}):
        values = [r["overhead_us"] for r in results["ops"] if r["backend"] == backend and r["size"] == "tiny"
                  and "overhead_us" in r and len(r.get("kernels", [])) == 1]
        if values:
            out.append(_goal(f"dispatch overhead on {backend} (median over single-kernel tiny ops)",
                             (statistics.median(values), None), "<=", GOALS["dispatch_overhead_us"], " µs"))
    return out


def _best(rows, dtype, label, keep, field):
    found = [(r["results"].get(label, {}).get(field), r["name"]) for r in rows if r["dtype"] == dtype and keep(r)]
    found = [f for f in found if f[0] is not None]
    return max(found) if found else (None, None)


def _goal(name, found, op, target, unit) -> dict:
    value, who = found
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"goal": name, "target": f"{op} {target:.3g}{unit}", "value": value, "unit": unit.strip(),
            "by": who, "met": met}
