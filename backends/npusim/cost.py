"""The cost model: simulated time per op, per transfer, in total.

Each kernel adds launch + max(flops / peak, bytes / bandwidth) (a roofline: an op is either
compute- or memory-bound), with the peak of the unit that runs it in the dtype it runs in.
Host <-> device copies add bytes / host link bandwidth. A reshape is a view and costs nothing.
Flop counts are the usual textbook ones (2·M·N·K for a matmul); they rank bottlenecks, they do
not predict a real chip to the microsecond.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

# flops per output (or, for reductions, per input) element of the vector-unit ops that do more
# than one operation per element
_PER_ELEMENT = {"softmax": 5, "log_softmax": 6, "rms_norm": 4, "layer_norm": 7, "rope": 4,
                "silu": 4, "rsqrt": 2, "mean": 1}
_REDUCTIONS = frozenset({"sum", "max", "argmax", "mean"})


def count_flops(op: str, inputs: list, out: np.ndarray) -> float:
    """Arithmetic operations one call of `op` performs (inputs/out are host numpy arrays)."""
    if op == "matmul":
        a = inputs[0]
        return 2.0 * out.size * (a.shape[-1] if a.ndim else 1)
    if op == "linear":
        return 2.0 * out.size * inputs[0].shape[-1]
    if op == "attention":
        q, k, v = inputs[:3]
        b, h, t, d = q.shape
        s = k.shape[2]
        return 2.0 * b * h * t * s * (d + v.shape[3]) + 5.0 * b * h * t * s
    if op in _REDUCTIONS:
        return float(inputs[0].size) * _PER_ELEMENT.get(op, 1)
    return float(out.size) * _PER_ELEMENT.get(op, 1)


def count_bytes(inputs: list, out: np.ndarray | None) -> int:
    """Bytes a kernel reads and writes: every input once, the output once."""
    total = 0 if out is None else out.nbytes
    for a in inputs:
        if a is None:
            continue
        if isinstance(a, list):
            total += sum(x.nbytes for x in a)
        else:
            total += a.nbytes
    return total


@dataclass
class OpCost:
    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0


class CostLedger:
    """Simulated seconds spent so far, per op and on host transfers."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.time = 0.0
        self.per_op: dict[str, OpCost] = defaultdict(OpCost)
        self.h2d_bytes = 0
        self.d2h_bytes = 0
        self.transfer_time = 0.0
        self.launches = 0

    def charge(self, op: str, seconds: float, flops: float, nbytes: float) -> None:
        entry = self.per_op[op]
        entry.calls += 1
        entry.seconds += seconds
        entry.flops += flops
        entry.bytes += nbytes
        self.time += seconds
        self.launches += 1

    def transfer(self, direction: str, nbytes: int, seconds: float, op: str) -> None:
        if direction == "h2d":
            self.h2d_bytes += nbytes
        else:
            self.d2h_bytes += nbytes
        self.transfer_time += seconds
        self.time += seconds
        entry = self.per_op[op]
        entry.seconds += seconds
        entry.bytes += nbytes

    def breakdown(self) -> dict[str, dict[str, float]]:
        """{op: {calls, seconds, flops, bytes, share}}, biggest share first."""
        total = self.time or 1.0
        rows = sorted(self.per_op.items(), key=lambda kv: -kv[1].seconds)
        return {name: {"calls": c.calls, "seconds": c.seconds, "flops": c.flops, "bytes": c.bytes,
                       "share": c.seconds / total} for name, c in rows}


def kernel_time(profile, unit: str, dtype, flops: float, nbytes: float) -> float:
    """launch + max(flops / peak, bytes / bandwidth) for one kernel on `unit` in `dtype`."""
    if unit == "view":
        return 0.0
    compute = flops / profile.peak(unit, dtype) if unit in ("cube", "vector") and flops else 0.0
    return profile.launch_overhead + max(compute, nbytes / profile.memory_bandwidth)
