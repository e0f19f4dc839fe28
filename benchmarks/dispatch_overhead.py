"""Dispatch overhead of eager accel over calling the native library directly (goal: <= 1 µs/op).

    python benchmarks/dispatch_overhead.py [--backend torch:cpu] [--repeats 15] [--calls 2000]
                                           [--out benchmarks/results/dispatch_overhead.json]

For each op, at a tiny size (4x4 float32, where the kernel itself costs a few µs at most), times
`--calls` back-to-back calls of (a) the accel op on the chosen backend and (b) the same native
call on the native arrays (torch.add for torch, np.add for numpy ...). The two are interleaved
within every repetition so that drift (frequency scaling, other processes) hits both alike; the
figure per op is the median over repetitions, and the overhead is accel minus native. Time is
this process's CPU time by default (`--clock cpu`), so time spent descheduled on a shared
machine does not count; the native libraries run single-threaded (at this size threads only
add noise), so CPU time is the work done.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import accel  # noqa: E402
from accel import ops  # noqa: E402

GOAL_US = 1.0


def torch_natives(xt, yt, mt, wt, idx):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    return {
        "add": lambda: torch.add(xt, yt),
        "mul": lambda: torch.mul(xt, yt),
        "add scalar": lambda: torch.add(xt, 0.5),
        "exp": lambda: torch.exp(xt),
        "matmul": lambda: torch.matmul(xt, mt),
        "reshape": lambda: torch.reshape(xt, (2, 8)),
        "permute": lambda: torch.permute(xt, (1, 0)),
        "sum": lambda: torch.sum(xt, dim=-1),
        "softmax": lambda: torch.softmax(xt, -1),
        "rms_norm": lambda: F.rms_norm(xt, (4,), wt, 1e-6),
        "getitem": lambda: xt[1:3],
        "gather": lambda: torch.index_select(xt, 0, idx),
    }


def numpy_natives(x, y, m, w, idx):
    def softmax(a):
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def rms_norm(a):
        return a / np.sqrt(np.mean(a * a, -1, keepdims=True) + 1e-6) * w

    return {
        "add": lambda: np.add(x, y),
        "mul": lambda: np.multiply(x, y),
        "add scalar": lambda: np.add(x, np.float32(0.5)),
        "exp": lambda: np.exp(x),
        "matmul": lambda: np.matmul(x, m),
        "reshape": lambda: np.reshape(x, (2, 8)),
        "permute": lambda: np.transpose(x, (1, 0)),
        "sum": lambda: np.sum(x, axis=-1),
        "softmax": lambda: softmax(x),
        "rms_norm": lambda: rms_norm(x),
        "getitem": lambda: x[1:3],
        "gather": lambda: np.take(x, idx, axis=0),
    }


def accel_calls(x, y, m, w, idx):
    return {
        "add": lambda: ops.add(x, y),
        "mul": lambda: ops.mul(x, y),
        "add scalar": lambda: ops.add(x, 0.5),
        "exp": lambda: ops.exp(x),
        "matmul": lambda: ops.matmul(x, m),
        "reshape": lambda: ops.reshape(x, (2, 8)),
        "permute": lambda: ops.permute(x, (1, 0)),
        "sum": lambda: ops.sum(x, -1),
        "softmax": lambda: ops.softmax(x, -1),
        "rms_norm": lambda: ops.rms_norm(x, w, 1e-6),
        "getitem": lambda: x[1:3],
        "gather": lambda: ops.gather(x, idx, 0),
    }


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def per_call_us(fn, calls: int) -> float:
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls * 1e6


def measure(backend_name: str, repeats: int, calls: int) -> list[dict]:
    backend = accel.get_backend(backend_name)
    rng = np.random.default_rng(0)
    host = {k: rng.standard_normal(s).astype(np.float32) for k, s in
            (("x", (4, 4)), ("y", (4, 4)), ("m", (4, 4)), ("w", (4,)))}
    idx_host = np.array([2, 0, 3], np.int64)
    tensors = {k: accel.from_numpy(v, backend=backend) for k, v in host.items()}
    idx = accel.from_numpy(idx_host, backend=backend)
    accel_fns = accel_calls(tensors["x"], tensors["y"], tensors["m"], tensors["w"], idx)
    natives = [t.data for t in (tensors["x"], tensors["y"], tensors["m"], tensors["w"], idx)]
    native_fns = torch_natives(*natives) if backend.name == "torch" else numpy_natives(*natives)
    samples: dict[str, dict[str, list[float]]] = {op: {"accel": [], "native": []} for op in accel_fns}
    for fn in list(accel_fns.values()) + list(native_fns.values()):  # warm up caches and kernels
        per_call_us(fn, 50)
    for _ in range(repeats):
        for op in accel_fns:  # interleaved: accel and native alternate within each repetition
            samples[op]["accel"].append(per_call_us(accel_fns[op], calls))
            samples[op]["native"].append(per_call_us(native_fns[op], calls))
    rows = []
    for op, s in samples.items():
        a, n = statistics.median(s["accel"]), statistics.median(s["native"])
        rows.append({"op": op, "accel_us": round(a, 3), "native_us": round(n, 3),
                     "overhead_us": round(a - n, 3)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", action="append", default=None,
                   help="backend(s) to measure (default: torch:cpu and numpy)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                   help="cpu: this process's CPU time (robust on a shared machine, the default); "
                        "wall: elapsed time")
    p.add_argument("--out", default="benchmarks/results/dispatch_overhead.json")
    args = p.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    names = args.backend or ["torch:cpu", "numpy"]
    report = {"goal_us": GOAL_US, "python": sys.version.split()[0], "machine": platform.machine(),
              "processor": platform.processor(), "repeats": args.repeats, "calls": args.calls,
              "clock": args.clock, "load_average": os.getloadavg()[0],
              "results": {}}
    for name in names:
        rows = measure(name, args.repeats, args.calls)
        report["results"][name] = rows
        print(f"\n{name}: µs per call, median of {args.repeats} x {args.calls} calls, 4x4 float32")
        print(f"  {'op':<12} {'accel':>8} {'native':>8} {'overhead':>9}")
        for r in rows:
            print(f"  {r['op']:<12} {r['accel_us']:>8.2f} {r['native_us']:>8.2f} {r['overhead_us']:>9.2f}")
        median = statistics.median(r["overhead_us"] for r in rows)
        report["results"][name + ":median_overhead_us"] = round(median, 3)
        verdict = "meets" if median <= GOAL_US else "misses"
        print(f"  median overhead {median:.2f} µs/op ({verdict} the {GOAL_US:g} µs goal)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
