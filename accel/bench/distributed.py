"""`accel bench --section distributed`: what each collective costs here, on 2 ranks.

torchrun (`accel.distributed.run_torchrun`) starts 2 ranks, each running this module; rank 0
writes the figures to a JSON file that the bench reads back. Every figure is a median of
interleaved repetitions (accel.bench.timing), ranks aligned by a barrier before each timed call,
and each accel row has the raw torch.distributed call on the same buffer beside it, so the
overhead of going through accel (dispatch, staging, the result buffer) is a ratio from one run.

Rows:
- all_reduce (sum, float32) over message sizes: latency, algorithm bandwidth (bytes / s) and bus
  bandwidth (x 2(n-1)/n, nccl-tests' convention), per backend: numpy goes through a host view,
  torch:cpu hands its tensor to gloo directly;
- every collective at one size;
- all_reduce_buckets over a tiny Llama's parameter list for several bucket sizes;
- data-parallel training throughput: `training_rows` (the data-parallel trainer's figures).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

WORLD = 2
SIZES_FULL = tuple(4 ** k for k in range(1, 14))          # 4 B ... 64 MiB
SIZES_QUICK = tuple(4 ** k for k in range(1, 12, 2))       # 4 B ... 4 MiB
OPS_SIZE = 2 ** 20                                          # bytes per rank for the per-op rows
BUCKETS = (1, 256 * 2 ** 10, 2 ** 20, 4 * 2 ** 20, 25 * 2 ** 20)  # 1: every tensor alone
DEFAULT_BACKENDS = ("numpy", "torch:cpu")
CALLS_MAX, BATCH_BYTES = 20, 4 * 2 ** 20  # back-to-back calls per timed sample (see calls_per_sample)


def run_section(settings, log) -> dict:
    """Launch the 2-rank measurement under torchrun and return rank 0's figures."""
    from accel.distributed.launch import run_torchrun

    backends = [b for b in (settings.backends or DEFAULT_BACKENDS)]
    spec = {"backends": backends, "quick": settings.quick, "repeats": settings.repeats,
            "train_model": settings.train_model, "seed": settings.seed}
    log(f"distributed: {WORLD} ranks under torchrun, gloo, backends {', '.join(backends)} ...")
    with tempfile.TemporaryDirectory(prefix="accel-bench-dist-") as tmp:
        out = os.path.join(tmp, "distributed.json")
        run_torchrun(["--spec", json.dumps(spec), "--out", out], WORLD, module=__name__)
        with open(out) as f:
            result = json.load(f)
    result["training"] = training_rows(settings, log)
    return result


def training_rows(settings, log) -> list[dict]:
    """Data-parallel training throughput (tokens/s on 1 and 2 ranks, share of a step spent in
    communication): accel/bench/distributed_training.py."""
    from accel.bench.distributed_training import training_rows as rows

    return rows(settings, log, tuple(settings.backends or DEFAULT_BACKENDS))


# --- inside each rank ------------------------------------------------------------------------
def _timed(fn, dist_barrier, calls: int = 1, cpu: list | None = None):
    """Seconds per call of `fn`, over `calls` back-to-back calls after a barrier. `cpu` collects
    this thread's CPU seconds per call: the library moves the bytes on its own threads while the
    caller waits, so this is the caller's own cost (accel's Python, staging, copies), and a busy
    host inflates it far less than the wall time."""
    import time

    def run() -> float:
        dist_barrier()
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            fn()
        if cpu is not None:
            cpu.append((time.thread_time() - start_cpu) / calls)
        return (time.perf_counter() - start) / calls
    return run


def calls_per_sample(nbytes: int) -> int:
    """Small messages take ~0.1-1 ms: time several per sample so one scheduler hiccup on a
    shared host does not decide the figure."""
    return max(1, min(CALLS_MAX, BATCH_BYTES // max(nbytes, 1)))


def _measure(spec: dict) -> dict:
    import numpy as np
    import torch
    import torch.distributed as tdist

    import accel
    import accel.distributed as dist
    from accel.bench.timing import Case, interleave
    from accel.distributed import process_group as pg

    def on_this_rank(name: str) -> str:  # torch:cuda -> torch:cuda:<local rank>
        return dist.backend_for_local_rank(name, dist.local_rank())

    info = dist.init(backend=on_this_rank(spec["backends"][0]))
    repeats = max(3, spec["repeats"])
    group = pg.STATE.data
    barrier = dist.barrier
    sizes = SIZES_QUICK if spec["quick"] else SIZES_FULL
    cases: list[Case] = []
    rows: list[dict] = []

    def pair(row: dict, accel_fn, raw_fn):
        calls = row["calls_per_sample"] = calls_per_sample(row["bytes"])
        row["accel_cpu"], row["raw_cpu"] = [], []
        row["accel"] = Case(f"{row['what']}/accel", _timed(accel_fn, barrier, calls, row["accel_cpu"]))
        cases.append(row["accel"])
        if raw_fn is not None:  # None: this backend's arrays cannot go to the library as they are
            row["raw"] = Case(f"{row['what']}/raw", _timed(raw_fn, barrier, calls, row["raw_cpu"]))
            cases.append(row["raw"])
        rows.append(row)

    def raw_device(backend, x):
        """Where torch.distributed's own call keeps its buffer: the backend's device when the
        library takes its tensors directly, the CPU on gloo, else None (no raw row)."""
        view = backend.torch_view(x.data) if backend.collective_backend == info.comm_backend else None
        if view is not None:
            return view.device
        return torch.device("cpu") if info.comm_backend == "gloo" else None

    for name in spec["backends"]:
        backend = accel.get_backend(on_this_rank(name))
        for nbytes in sizes:
            n = max(1, nbytes // 4)
            x = accel.from_numpy(np.ones(n, np.float32), backend=backend)
            device = raw_device(backend, x)
            buf = None if device is None else torch.ones(n, dtype=torch.float32, device=device)
            pair({"what": f"all_reduce/{name}/{nbytes}", "table": "sweep", "op": "all_reduce",
                  "backend": backend.spec, "bytes": 4 * n},
                 lambda x=x: dist.all_reduce(x), None if buf is None else lambda buf=buf: tdist.all_reduce(buf, group=group))
        n = OPS_SIZE // 4
        x = accel.from_numpy(np.ones(n, np.float32), backend=backend)
        device = raw_device(backend, x) or torch.device("cpu")
        buf = torch.ones(n, dtype=torch.float32, device=device)
        out_rs = torch.empty(n // WORLD, dtype=torch.float32, device=device)
        out_ag = torch.empty(n * WORLD, dtype=torch.float32, device=device)
        scatter = getattr(tdist, "reduce_scatter_single", None) or tdist.reduce_scatter_tensor
        gather = getattr(tdist, "all_gather_single", None) or tdist.all_gather_into_tensor
        raw = {"all_reduce": lambda b=buf: tdist.all_reduce(b, group=group),
               "reduce_scatter": lambda o=out_rs, b=buf: scatter(o, b, group=group),
               "all_gather": lambda o=out_ag, b=buf: gather(o, b, group=group),
               "broadcast": lambda b=buf: tdist.broadcast(b, src=0, group=group)}
        if raw_device(backend, x) is None:
            raw = dict.fromkeys(raw)
        ours = {"all_reduce": lambda x=x: dist.all_reduce(x), "reduce_scatter": lambda x=x: dist.reduce_scatter(x),
                "all_gather": lambda x=x: dist.all_gather(x), "broadcast": lambda x=x: dist.broadcast(x)}
        for op in raw:
            pair({"what": f"{op}/{name}", "table": "ops", "op": op, "backend": backend.spec, "bytes": 4 * n},
                 ours[op], raw[op])

    # buckets: a tiny Llama's parameters (as gradients would be), on the first backend
    from accel.models import LlamaConfig
    from accel.models.llama import init_params

    config = LlamaConfig(model_type="llama", rms_norm_eps=1e-5, initializer_range=0.02, **spec["train_model"])
    backend = accel.get_backend(on_this_rank(spec["backends"][0]))
    params = list(init_params(config, spec["seed"], backend, accel.float32).values())
    total = sum(p.nbytes for p in params)
    for bucket in BUCKETS:
        count = len(dist.plan_buckets(params, bucket))
        case = Case(f"buckets/{bucket}", _timed(lambda b=bucket: dist.all_reduce_buckets(params, "mean", b), barrier))
        cases.append(case)
        rows.append({"what": f"buckets/{bucket}", "table": "buckets", "bucket_bytes": bucket, "collectives": count,
                     "tensors": len(params), "bytes": total, "backend": backend.spec, "accel": case})

    interleave(cases, repeats, "distributed", progress=False)
    import statistics

    summary = []
    for row in rows:
        entry = {k: v for k, v in row.items() if k not in ("accel", "raw", "accel_cpu", "raw_cpu")}
        if row.get("accel_cpu") and row.get("raw_cpu"):  # warm-up excluded, as for the wall times
            entry["overhead_cpu_s"] = statistics.median(row["accel_cpu"][1:]) - statistics.median(row["raw_cpu"][1:])
        for side in ("accel", "raw"):
            if side in row:
                entry[f"{side}_s"] = row[side].summary().get("median_s")
        if entry.get("accel_s"):
            entry["algbw_GBps"] = entry["bytes"] / entry["accel_s"] / 1e9
            entry["busbw_GBps"] = entry["algbw_GBps"] * 2 * (WORLD - 1) / WORLD
            if entry.get("raw_s"):
                entry["accel_over_raw"] = entry["accel_s"] / entry["raw_s"]
        summary.append(entry)
    result = {"world_size": info.world_size, "comm_backend": info.comm_backend,
              "repeats": repeats, "rows": summary,
              "model": {"parameters": sum(p.size for p in params), "tensors": len(params), "bytes": total}}
    dist.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = _measure(json.loads(args.spec))
    if int(os.environ.get("RANK", "0")) == 0:
        with open(args.out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


def markdown(result: dict) -> list[str]:
    """The section's tables for bench.md."""
    lines = [f"### Collectives: {result['world_size']} ranks on {result['comm_backend']}, this machine", "",
             "Median of interleaved repetitions; `raw` is torch.distributed on the same buffer. "
             "busbw = bytes/time x 2(n-1)/n (nccl-tests' convention).", "",
             "accel CPU µs: the calling thread's CPU time per call beyond raw's (dispatch, staging, "
             "the result buffer), robust to a busy host where wall times are not.", "",
             "| op | backend | bytes | accel µs | raw µs | accel/raw | accel CPU µs | busbw GB/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r["table"] in ("sweep", "ops"):
            lines.append(f"| {r['op']} | {r['backend']} | {r['bytes']} | {_us(r.get('accel_s'))} | {_us(r.get('raw_s'))} | "
                         f"{_ratio(r.get('accel_over_raw'))} | {_us(r.get('overhead_cpu_s'))} | {_gb(r.get('busbw_GBps'))} |")
    model = result.get("model", {})
    lines += ["", f"### all_reduce_buckets: a tiny Llama's {model.get('tensors')} parameter tensors "
                  f"({model.get('bytes', 0) / 2**20:.1f} MiB float32), op=mean", "",
              "| bucket bytes | collectives | ms | busbw GB/s |", "|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r["table"] == "buckets":
            label = "per tensor" if r["bucket_bytes"] == 1 else str(r["bucket_bytes"])
            ms = "" if r.get("accel_s") is None else f"{1e3 * r['accel_s']:.2f}"
            lines.append(f"| {label} | {r['collectives']} | {ms} | {_gb(r.get('busbw_GBps'))} |")
    if result.get("training"):
        lines += ["", "### Data-parallel training", "", "| ranks | backend | tokens/s | comm share |", "|---:|---|---:|---:|"]
        for r in result["training"]:
            lines.append(f"| {r.get('ranks')} | {r.get('backend')} | {r.get('tokens_per_s', 0):.0f} | "
                         f"{r.get('comm_share', 0):.0%} |")
    return lines + [""]


def _us(seconds) -> str:
    return "" if seconds is None else f"{1e6 * seconds:.0f}"


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _gb(value) -> str:
    return "" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
