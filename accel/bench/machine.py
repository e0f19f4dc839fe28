"""The machine a run measured: facts (CPU, memory, library versions, load) and its roofline.

The roofline is measured, not looked up: memory bandwidth from a large streaming array
operation (y = x * 1: every byte read once and written once, STREAM's "scale"), and the matmul
peak from a large float32 matmul, each the best of a few runs. Both are measured through every
backend in the run (each library has its own copy loop, threading and BLAS); backends on the
host CPU share one roofline, the best any of them reached, since the hardware is the same.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import time

import numpy as np

import accel
from accel import ops
from accel.core import host_info
from accel.bench.timing import best_of

LIBRARIES = ("numpy", "torch", "jax", "jaxlib", "onnxruntime", "onnx", "transformers", "ml_dtypes")


def machine_facts() -> dict:
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": host_info.cpu_name(),
        "cpu_features": host_info.cpu_features(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(host_info.memory_bytes() / 2**30, 1) if host_info.memory_bytes() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                        if k in os.environ},
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": {},
    }
    for name in ("accel-layer", *LIBRARIES):
        try:
            facts["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return facts


def host_copy(stream_mb: int, repeats: int = 5) -> dict:
    """Host memory bandwidth from a plain copy into a preallocated array (no page faults)."""
    x = np.ones(stream_mb * 2**20 // 4, np.float32)
    y = np.empty_like(x)

    def copy() -> float:
        start = time.perf_counter()
        np.copyto(y, x)
        return time.perf_counter() - start

    copy()
    return {"bandwidth_gbs": 2 * x.nbytes / best_of(copy, repeats) / 1e9, "stream_mb": stream_mb}


def wait(t) -> None:
    """Block until `t` is computed (the backend's hook: jax waits for the array, torch syncs)."""
    t.backend.block_until_ready(t.data)


def measure_roofline(backend, stream_mb: int, matmul_n: int, dtypes=("float32",), repeats: int = 5) -> dict:
    """Bandwidth (GB/s) and matmul peak per dtype (GFLOP/s) as reached through `backend`."""
    n = stream_mb * 2**20 // 4
    x = accel.from_numpy(np.ones(n, np.float32), backend)

    def stream() -> float:
        start = time.perf_counter()
        wait(ops.mul(x, 1.0))
        return time.perf_counter() - start

    stream()  # first touch: page faults and any per-shape compile
    out = {"bandwidth_gbs": 2 * n * 4 / best_of(stream, repeats) / 1e9, "stream_mb": stream_mb,
           "matmul_n": matmul_n}
    rng = np.random.default_rng(0)
    for name in dtypes:
        dtype = accel.as_dtype(name)
        if dtype not in backend.dtypes:
            continue
        a, b = (ops.cast(accel.from_numpy(rng.standard_normal((matmul_n, matmul_n), dtype=np.float32), backend), dtype)
                for _ in range(2))

        def matmul() -> float:
            start = time.perf_counter()
            wait(ops.matmul(a, b))
            return time.perf_counter() - start

        matmul()
        out[f"matmul_gflops_{name}"] = 2 * matmul_n ** 3 / best_of(matmul, max(3, repeats // 2)) / 1e9
    out["matmul_gflops"] = out.get("matmul_gflops_float32", 0.0)
    return out


def device_key(backend) -> str:
    return "host" if backend.runs_on_host() else backend.spec


def combine(per_backend: dict[str, dict], backends, host: dict | None) -> dict[str, dict]:
    """{device key: the best bandwidth and per-dtype matmul peak over the backends on that device}."""
    out: dict[str, dict] = {}
    if host is not None:
        out["host"] = {"bandwidth_gbs": host["bandwidth_gbs"], "bandwidth_from": "numpy copyto"}
    for b in backends:
        figures = per_backend.get(b.spec)
        if not figures or "error" in figures:
            continue
        best = out.setdefault(device_key(b), {"bandwidth_gbs": 0.0})
        for k, v in figures.items():
            if (k == "bandwidth_gbs" or k.startswith("matmul_gflops")) and v > best.get(k, 0.0):
                best[k] = v
                best[_source_key(k)] = b.spec
    return out


def merge_best(first: dict[str, dict], second: dict[str, dict]) -> dict[str, dict]:
    """Per device and figure, the better of two measurements (taken at the start and the end of a
    run: a peak is what the machine can do, and a busy minute only ever lowers it)."""
    out = {k: dict(v) for k, v in first.items()}
    for key, figures in second.items():
        best = out.setdefault(key, {})
        for k, v in figures.items():
            if isinstance(v, float) and v > best.get(k, 0.0):
                best[k] = v
                source = _source_key(k)
                if source in figures:
                    best[source] = figures[source]
    return out


def _source_key(figure: str) -> str:
    """Where a figure's best value came from: bandwidth_gbs -> bandwidth_from,
    matmul_gflops_bfloat16 -> matmul_bfloat16_from."""
    return figure.replace("_gbs", "").replace("_gflops", "") + "_from"
