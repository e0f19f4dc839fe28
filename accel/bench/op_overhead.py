"""Per-op dispatch overhead: accel eager against the backend's own kernel on the native arrays.

The "native" side of each pair is what the accel call ran underneath: the same kernels, on the
same native arrays, with the same attributes, called directly (torch.add for torch, np.add for
numpy, jnp.add for jax, an ONNX Runtime session for onnxruntime). They are found by running the
accel call once with an interceptor that records each op that reached a backend kernel, so a
composite the backend decomposes is compared with the primitives it became. overhead = accel −
native per call, at a tiny size (where the kernel is cheap and the overhead shows) and at a
size the ~100M model runs (where it should vanish in the kernel's own time).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

import accel
from accel import ops
from accel.core import dispatch
from accel.bench.machine import wait
from accel.bench.timing import Case, interleave
from accel.core.tensor import Tensor

TINY = "tiny"
MODEL = "model"


def _f32(backend, *shape, seed=0, scale=1.0):
    return accel.from_numpy((np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32), backend)


def op_cases(backend, size: str, hidden: int, inter: int, heads: int, kv_heads: int) -> dict[str, Callable]:
    """label -> a zero-argument accel call at `size` ("tiny": 4x4 class; "model": 128 tokens of the model)."""
    t, c = (4, 4) if size == TINY else (128, hidden)
    f = inter if size == MODEL else 4
    d = 4 if size == TINY else hidden // heads
    h, hk, s = (2, 1, 8) if size == TINY else (heads, kv_heads, 256)
    x, y = _f32(backend, t, c, seed=1), _f32(backend, t, c, seed=2)
    w = _f32(backend, f, c, seed=3, scale=0.05)
    g = _f32(backend, c, seed=4)
    right = _f32(backend, c, f, seed=9, scale=0.05)
    ids = accel.from_numpy(np.arange(t, dtype=np.int64) % 3, backend)
    table = _f32(backend, 16 if size == TINY else 32000, c, seed=5)
    q = _f32(backend, 1, h, 1, d, seed=6)
    k, v = _f32(backend, 1, hk, s, d, seed=7), _f32(backend, 1, hk, s, d, seed=8)
    mask = accel.from_numpy(np.arange(s)[None, None, None, :] < s // 2, backend)
    return {
        "add": lambda: ops.add(x, y),
        "mul": lambda: ops.mul(x, y),
        "add scalar": lambda: ops.add(x, 0.5),
        "exp": lambda: ops.exp(x),
        "silu": lambda: ops.silu(x),
        "cast bf16": lambda: ops.cast(x, accel.bfloat16),
        "matmul": lambda: ops.matmul(x, right),
        "linear": lambda: ops.linear(x, w),
        "reshape": lambda: ops.reshape(x, (t * c,)),
        "permute": lambda: ops.permute(x, (1, 0)),
        "sum": lambda: ops.sum(x, axis=-1),
        "softmax": lambda: ops.softmax(x, -1),
        "rms_norm": lambda: ops.rms_norm(x, g, 1e-6),
        "embedding": lambda: ops.embedding(table, ids),
        "getitem": lambda: x[1:3],
        "concat": lambda: ops.concat([x, y], axis=0),
        "attention (decode)": lambda: ops.attention(q, k, v, mask),
    }


def capture(call: Callable) -> list[tuple[Callable, list, dict, str]]:
    """The (kernel, native args, attrs, op name) each backend kernel call of `call()` received."""
    found: list = []
    inside_kernel = [0]

    def record(op, args, attrs):
        if inside_kernel[0]:
            return NotImplemented
        args, attrs = dispatch.prepared(op, args, attrs)
        backend = dispatch.backend_of(op, args, attrs)
        kernel = backend.kernels.get(op)
        if kernel is None:
            return NotImplemented  # decomposes: its primitives come through here next
        kernel_attrs = {k: v for k, v in attrs.items() if k != "backend"}
        natives = ([[a.data for a in args[0]], *[_native(a) for a in args[1:]]] if op.variadic
                   else [_native(a) for a in args])
        found.append((kernel, natives, kernel_attrs, op.name))
        inside_kernel[0] += 1
        try:
            return dispatch.eager(op, args, attrs)
        finally:
            inside_kernel[0] -= 1

    dispatch.push_interceptor(record)
    try:
        call()
    finally:
        dispatch.pop_interceptor(record)
    return found


def _native(a):
    return a.data if isinstance(a, Tensor) else a


def native_call(recorded) -> Callable:
    if len(recorded) == 1:
        kernel, natives, attrs, _ = recorded[0]
        return lambda: kernel(*natives, **attrs)

    def run_all():
        out = None
        for kernel, natives, attrs, _ in recorded:
            out = kernel(*natives, **attrs)
        return out
    return run_all


def _timed(fn: Callable, calls: int, backend, wrap: bool) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        if wrap:
            wait(out)
        else:
            wait(Tensor(out, backend))
        return (time.perf_counter() - start) / calls
    return run


def build_cases(backends, settings) -> tuple[list[Case], list[dict]]:
    m = settings.model
    cases, rows = [], []
    for backend in backends:
        for size in (TINY, MODEL):
            for label, call in op_cases(backend, size, m["hidden_size"], m["intermediate_size"],
                                        m["num_attention_heads"], m["num_key_value_heads"]).items():
                row = {"backend": backend.spec, "op": label, "size": size}
                try:
                    call()  # the first call compiles / resolves; capture sees the steady state
                    recorded = capture(call)
                except accel.AccelError as error:
                    row["skipped"] = f"failed: {str(error).splitlines()[0]}"
                    rows.append(row)
                    continue
                row["kernels"] = [r[3] for r in recorded]
                calls = _calls_for(call, settings.op_calls)
                key = f"ops/{backend.spec}/{size}/{label}"
                row["accel"] = Case(key + "/accel", _timed(call, calls, backend, True), group=key)
                row["native"] = Case(key + "/native", _timed(native_call(recorded), calls, backend, False), group=key)
                row["calls"] = calls
                cases += [row["accel"], row["native"]]
                rows.append(row)
    return cases, rows


def _calls_for(call: Callable, most: int) -> int:
    """Enough back-to-back calls for ~20 ms per timed batch, between 3 and `most`."""
    start = time.perf_counter()
    wait(call())
    one = time.perf_counter() - start
    return int(max(3, min(most, 0.02 / max(one, 1e-7))))


def run_ops(backends, settings, progress: bool = True) -> list[dict]:
    cases, rows = build_cases(backends, settings)
    interleave(cases, settings.repeats if not settings.quick else max(3, settings.repeats), "ops", progress)
    out = []
    for row in rows:
        result = {k: v for k, v in row.items() if k not in ("accel", "native")}
        if "accel" in row:
            a, n = row["accel"].summary(), row["native"].summary()
            skipped = a.get("skipped") or n.get("skipped")
            if skipped:
                result["skipped"] = skipped
            else:
                result["accel_us"] = a["median_s"] * 1e6
                result["native_us"] = n["median_s"] * 1e6
                result["overhead_us"] = result["accel_us"] - result["native_us"]
        out.append(result)
    return out
