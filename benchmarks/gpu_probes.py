"""The GPU-specific checks of benchmarks/gpu_check.sh, one JSON object on stdout per probe.

    python3 benchmarks/gpu_probes.py PROBE --device torch:cuda:0

PROBE is one of:
  flash-sdpa      accel attention (bfloat16, causal) under torch's FLASH_ATTENTION backend only,
                  against float64 math; timing flash vs the math kernel
  fp8-scaled-mm   ops.scaled_matmul (tensor/row scales, bfloat16/float32 out, e4m3/e5m2)
                  through torch._scaled_mm against the exact emulation, the path of each
  cudagraph-decode  a compiled Llama decode replayed as a CUDA graph: greedy tokens equal to
                  eager, replays counted, tokens/s eager vs compiled
  inductor-decode the bench-size Llama (bfloat16) decoding at batch 1 through inductor + CUDA
                  graphs: tokens/s and the share of the HBM bandwidth bound

On a CPU device (GPU_CHECK_ALLOW_CPU=1 dry runs) every probe runs what it can there (math SDPA,
the float8 emulation, compiled decode without CUDA graphs) and says what it could not check.
Exit status 1 when a probe's numbers are wrong, 0 otherwise (also when it could only skip).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _timed(fn, repeats: int = 10, sync=lambda: None) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def flash_sdpa(backend) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import accel
    from accel import ops

    rng = np.random.default_rng(0)
    cuda = backend.device_type == "cuda"
    t = 512 if cuda else 128  # the CPU dry run only checks the path
    shapes = ((2, 8, t, 64), (2, 2, t, 64))  # GQA: 8 query heads over 2 key/value heads
    q, k = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    v = rng.standard_normal(shapes[1]).astype(np.float32)
    ref = _attention_f64(q, k, v)
    tq, tk, tv = (ops.cast(accel.from_numpy(a, backend), accel.bfloat16) for a in (q, k, v))
    chosen = SDPBackend.FLASH_ATTENTION if cuda else SDPBackend.MATH
    with sdpa_kernel([chosen]):
        out = ops.attention(tq, tk, tv, causal=True)
        err = float(np.max(np.abs(np.asarray(ops.cast(out, accel.float32).numpy(), np.float64) - ref)))
        t_flash = _timed(lambda: ops.attention(tq, tk, tv, causal=True), 20 if cuda else 2, backend.synchronize)
    with sdpa_kernel([SDPBackend.MATH]):
        t_math = _timed(lambda: ops.attention(tq, tk, tv, causal=True), 20 if cuda else 2, backend.synchronize)
    ok = err < 0.05  # bfloat16 inputs and output: a few bfloat16 ulps of values of size ~1
    return {"probe": "flash-sdpa", "ok": ok, "kernel": chosen.name, "max_abs_err_vs_f64": err,
            "ms_selected": 1e3 * t_flash, "ms_math": 1e3 * t_math,
            "note": "" if cuda else "CPU: flash attention is CUDA-only; the math kernel was checked",
            "torch": torch.__version__}


def _attention_f64(q, k, v):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    t = s.shape[-1]
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def fp8_scaled_mm(backend) -> dict:
    """ops.scaled_matmul in the four forms fp8_linear and the bench use, each against the exact
    emulation on the same float8 operands within float32 accumulation-order rounding (the
    bound of tests/backends/test_torch_scaled_mm.py), and which path each took. On CUDA ≥ 8.9
    every form must run torch._scaled_mm (its shapes and dtypes meet torch's rules); on a CPU
    the probe opts in (scaled_mm=native): torch's CPU _scaled_mm, the same call convention."""
    import torch

    import accel
    from accel import ops
    from accel.backends.torch.float8 import scaled_matmul_emulated
    from accel.conformance.judge import ulp

    note = ""
    if not backend.native_scaled_mm and backend.device_type == "cpu":
        backend.configure(scaled_mm="native")
        note = "CPU: scaled_mm=native opted in: torch's CPU _scaled_mm, not FP8 hardware"
    m, k, n = 256, 512, 256
    rng = np.random.default_rng(1)

    def f8(shape, fmt):
        return ops.cast(accel.from_numpy((rng.standard_normal(shape) * 4).astype(np.float32), backend), fmt, True)

    def scales(shape):
        return accel.from_numpy((rng.random(shape) + 0.5).astype(np.float32), backend)

    e4, e5 = accel.float8_e4m3fn, accel.float8_e5m2
    one = (lambda: scales(()), lambda: scales(()))
    rows = (lambda: scales((m, 1)), lambda: scales((1, n)))
    forms = {  # name: (a format, b format, scales, out dtype)
        "tensor_e4m3_bf16": (e4, e4, one, accel.bfloat16),        # the bench's pre-quantized GEMM
        "row_e4m3_f32": (e4, e4, rows, accel.float32),            # fp8_linear row-wise forward
        "row_e5m2xe4m3_f32": (e5, e4, rows, accel.float32),       # its input-gradient GEMM
        "tensor_e4m3xe5m2_f32": (e4, e5, one, accel.float32),
    }
    out: dict = {"probe": "fp8-scaled-mm", "ok": True}
    # judged within float32 accumulation (unit 2^-24) on the CPU; FP8 tensor cores keep about 14
    # bits of a partial sum before promotion (DeepSeek-V3 report, §3.3.2), so 2^-14 on a GPU;
    # the ratio to the float32 bound is recorded either way: how near cuBLASLt is to float32
    units = {"f32": 2.0 ** -24, "judged": 2.0 ** -14 if backend.device_type == "cuda" else 2.0 ** -24}
    for name, (fa, fb, make, out_dtype) in forms.items():
        a, b = f8((m, k), fa), ops.transpose(f8((n, k), fb), 0, 1)  # b column-major
        sa, sb = make[0](), make[1]()
        before = backend.counters().get("scaled_mm_native", 0)
        got = ops.scaled_matmul(a, b, sa, sb, out_dtype=out_dtype)
        native = backend.counters().get("scaled_mm_native", 0) - before == 1
        want = scaled_matmul_emulated(a.data, b.data, sa.data, sb.data, out_dtype=out_dtype).double().cpu().numpy()
        mag = ((a.data.double().abs() @ b.data.double().abs()) * sa.data.double() * sb.data.double()).cpu().numpy()
        err = np.abs(np.asarray(ops.cast(got, accel.float32).numpy(), np.float64) - want)
        out[f"{name}_path"] = "torch._scaled_mm" if native else "emulation"
        for label, unit in units.items():
            bound = 2 * (k + 3) * unit / (1 - (k + 3) * unit) * mag
            if out_dtype is accel.bfloat16:
                bound = bound + ulp(np.abs(want) + bound, accel.bfloat16)
            out[f"{name}_err_over_{label}_bound"] = float((err / bound).max())
        out["ok"] &= out[f"{name}_err_over_judged_bound"] <= 1.0 and (native or not backend.native_scaled_mm)
        if name == "tensor_e4m3_bf16":
            out["ms_" + name] = 1e3 * _timed(lambda: ops.scaled_matmul(a, b, sa, sb, out_dtype=out_dtype),
                                            sync=backend.synchronize)
            out["ms_emulation"] = 1e3 * _timed(lambda: scaled_matmul_emulated(a.data, b.data, sa.data, sb.data,
                                                                              out_dtype=out_dtype),
                                               sync=backend.synchronize)
    out["native_scaled_mm"] = bool(backend.native_scaled_mm)
    out["note"] = note or ("" if backend.native_scaled_mm else "no float8 GEMM here (needs CUDA capability >= 8.9)")
    out["torch"] = torch.__version__
    return out


def _tiny_llama(backend, dtype, **sizes):
    import accel
    from accel.models import LlamaConfig, LlamaModel

    config = LlamaConfig(model_type="llama", rms_norm_eps=1e-5, initializer_range=0.02, **sizes)
    return config, LlamaModel.random(config, seed=0, backend=backend, dtype=accel.as_dtype(dtype))


def cudagraph_decode(backend) -> dict:
    sizes = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    cuda = backend.device_type == "cuda"
    if not cuda:  # the CPU dry run only checks the path
        sizes.update(num_hidden_layers=2, hidden_size=128, intermediate_size=344)
    _, model = _tiny_llama(backend, "float32", **sizes)
    prompt, new = [[1, 5, 9, 33, 2, 70, 11, 12]], 48 if cuda else 12
    backend.set_graph_compiler("python", cuda_graphs=True)
    try:
        eager = model.generate(prompt, new, stop_at_eos=False)
        t_eager = model.last_generation.decode_s
        model.compile()
        model.generate(prompt, new, stop_at_eos=False)  # traces and captures
        compiled = model.generate(prompt, new, stop_at_eos=False)
        t_compiled = model.last_generation.decode_s
    finally:
        backend.set_graph_compiler(None)
    decode = max(model.compiled.signatures(), key=lambda e: e.calls).run
    replays = getattr(decode, "replays", None)
    ok = compiled == eager and (not cuda or (replays or 0) >= new - 8)
    return {"probe": "cudagraph-decode", "ok": ok, "same_tokens_as_eager": compiled == eager,
            "cuda_graph_replays": replays, "recaptures": getattr(decode, "recaptures", None),
            "decode_tok_s_eager": (new - 1) / t_eager, "decode_tok_s_compiled": (new - 1) / t_compiled,
            "speedup": t_eager / t_compiled,
            "note": "" if cuda else "CPU: no CUDA graphs; the generated-code graph was checked"}


def inductor_decode(backend) -> dict:
    from accel.bench.model_rows import decode_bytes
    from accel.bench.settings import MODEL_FULL

    dtype = "bfloat16" if backend.device_type == "cuda" else "float32"
    sizes = MODEL_FULL if backend.device_type == "cuda" else dict(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    config, model = _tiny_llama(backend, dtype, **sizes)
    prompt, new = [[1, 5, 9, 33] * 8], 64
    backend.set_graph_compiler("inductor", cuda_graphs=True)
    try:
        model.compile()
        start = time.perf_counter()
        model.generate(prompt, new, stop_at_eos=False)  # the same cache length: the same graphs
        compile_s = time.perf_counter() - start
        tokens = model.generate(prompt, new, stop_at_eos=False)
        step_s = model.last_generation.decode_s / (new - 1)
    finally:
        backend.set_graph_compiler(None)
    bytes_per_step = decode_bytes(config, 1, len(prompt[0]) + new // 2, 2 if dtype == "bfloat16" else 4)
    out = {"probe": "inductor-decode", "ok": len(tokens[0]) == new and model.compiled.stats.traces == 2,
           "traces": model.compiled.stats.traces, "dtype": dtype,
           "parameters": config.num_parameters(), "compile_s": compile_s, "decode_tok_s": 1 / step_s,
           "achieved_gbs": bytes_per_step / step_s / 1e9}
    if backend.device_type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(backend.torch_device)
        peak = _hbm_gbs(props.name)
        if peak:
            out.update(hbm_peak_gbs=peak, pct_of_hbm_bound=100 * out["achieved_gbs"] / peak)
    return out


def _hbm_gbs(name: str) -> float | None:
    """Datasheet HBM bandwidth of common data-centre GPUs (GB/s)."""
    table = {"H100 SXM": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H100": 3350, "H200": 4800,
             "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "A100": 1555, "L40S": 864, "L4": 300}
    return next((v for k, v in table.items() if k in name), None)


PROBES = {"flash-sdpa": flash_sdpa, "fp8-scaled-mm": fp8_scaled_mm,
          "cudagraph-decode": cudagraph_decode, "inductor-decode": inductor_decode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--device", default="torch:cuda:0")
    args = parser.parse_args(argv)
    import accel

    backend = accel.get_backend(args.device)
    try:
        result = PROBES[args.probe](backend)
    except Exception as exc:  # recorded in the results file, never a traceback in it
        result = {"probe": args.probe, "ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result["device"] = backend.spec
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
