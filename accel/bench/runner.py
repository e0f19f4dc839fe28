"""One `accel bench` run: pick the backends, measure each section, judge the goals."""
from __future__ import annotations

import dataclasses
import sys
import time

import accel
from accel.bench import machine, model_rows, op_overhead, scatter, training
from accel.bench.goals import judge
from accel.bench.timing import interleave
from accel.core.registry import available_backends


def default_backends() -> list[str]:
    """Every available backend on its default device (accelerators first when present)."""
    return [name for name, status in available_backends().items() if status.available]


def run(settings, progress: bool = True, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    started = time.perf_counter()
    backends = [accel.get_backend(spec) for spec in (settings.backends or default_backends())]
    out: dict = {"settings": dataclasses.asdict(settings), "machine": machine.machine_facts(),
                 "backends": {b.spec: b.device_facts() for b in backends}}
    _threads(out["machine"])
    log(f"accel bench: {', '.join(b.spec for b in backends)}; sections {', '.join(settings.sections)}"
        f"{' (quick)' if settings.quick else ''}")

    roofline = None
    if "roofline" in settings.sections or "model" in settings.sections:
        roofline = _roofline(backends, settings, log)
    if "ops" in settings.sections:
        log("ops: accel eager against the backend's own kernel call ...")
        out["ops"] = op_overhead.run_ops(backends, settings, progress)
    model = None
    if "model" in settings.sections:
        model = _model(backends, settings, progress, log)
    if "train" in settings.sections:
        log("train: one optimizer step per repetition ...")
        rows, cases, config = training.build_train_cases(backends, settings)
        interleave(cases, settings.train_repeats, "train", progress)
        out["train"] = {"config": config.to_dict(), "parameters": config.num_parameters(),
                        "batch": settings.train_batch, "seq": settings.train_seq,
                        "rows": training.summarise_train(rows)}
        log("train: embedding gradient, one-hot matmul vs index_add ...")
        scatter_rows, scatter_cases = scatter.build_scatter_cases(backends, settings)
        interleave(scatter_cases, settings.train_repeats, "embedding-grad", progress)
        out["train"]["embedding_grad"] = scatter.summarise_scatter(scatter_rows)
    if "fp8" in settings.sections:
        from accel.bench import fp8

        out["fp8"] = fp8.run_section(backends, settings, log, progress)
    if "distributed" in settings.sections:
        from accel.bench import distributed

        out["distributed"] = distributed.run_section(settings, log)
    if roofline is not None:
        if not settings.quick:  # measured again at the end: a busy minute only lowers a peak
            again = _roofline(backends, settings, log)
            roofline = {"start": roofline, "end": again,
                        "devices": machine.merge_best(roofline["devices"], again["devices"])}
        out["roofline"] = roofline
    if model is not None:
        out["model"] = _summarise_model(*model, backends, roofline)
    out["goals"] = judge(out)
    out["elapsed_s"] = time.perf_counter() - started
    return out


def _threads(facts: dict) -> None:
    try:
        import torch

        facts["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass


def _roofline(backends, settings, log) -> dict:
    log("roofline: memory bandwidth (copy / y = x*1) and matmul peak per dtype ...")
    per_backend = {}
    for b in backends:
        try:
            per_backend[b.spec] = machine.measure_roofline(b, settings.roofline_mb, settings.matmul_n,
                                                           settings.dtypes)
        except (accel.AccelError, MemoryError) as error:
            per_backend[b.spec] = {"error": str(error).splitlines()[0]}
    host = machine.host_copy(settings.roofline_mb)
    devices = machine.combine(per_backend, backends, host)
    for key, fig in devices.items():
        peaks = ", ".join(f"{k.rsplit('_', 1)[1]} {v:.0f} GFLOP/s ({fig.get(f'matmul_{k.rsplit(chr(95), 1)[1]}_from')})"
                          for k, v in fig.items() if k.startswith("matmul_gflops_"))
        log(f"  {key}: {fig['bandwidth_gbs']:.1f} GB/s ({fig.get('bandwidth_from')}); matmul {peaks}")
    return {"host_copy": host, "per_backend": per_backend, "devices": devices}


def _model(backends, settings, progress, log):
    config, rows = model_rows.build_rows(backends, settings)
    log(f"model: Llama {config.num_parameters() / 1e6:.1f}M parameters, {len(rows)} rows, "
        f"median of {settings.repeats} interleaved repetitions ...")
    cases = [c for r in rows for c in r.cases.values()]
    interleave(cases, settings.repeats, "model", progress)
    return config, rows, settings


def _summarise_model(config, rows, settings, backends, roofline) -> dict:
    by_spec = {b.spec: b for b in backends}
    hf = {r.dtype: r for r in rows if r.mode == "hf"}
    summaries = []
    for r in rows:
        device = machine.device_key(by_spec[r.backend]) if r.backend in by_spec else "host"
        bound = (roofline or {}).get("devices", {}).get(device)
        summaries.append(model_rows.summarise(r, settings, config, bound, hf.get(r.dtype)))
    _ratios_to_hf(summaries)
    return {"config": config.to_dict(), "parameters": config.num_parameters(),
            "matmul_parameters": model_rows.matmul_params(config), "rows": summaries,
            "measurements": [m[0] for m in model_rows.measurements(settings)]}


def _ratios_to_hf(summaries: list[dict]) -> None:
    hf = {s["dtype"]: s for s in summaries if s["mode"] == "hf"}
    for s in summaries:
        ref = hf.get(s["dtype"])
        if ref is None or s is ref:
            continue
        for label, entry in s["results"].items():
            theirs = ref["results"].get(label, {}).get("tokens_per_s")
            if theirs and entry.get("tokens_per_s"):
                entry["ratio_to_hf"] = entry["tokens_per_s"] / theirs
