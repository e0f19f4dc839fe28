"""FP8 section: FP8 against bfloat16 GEMM throughput through accel, and a training step with FP8
linears against the bfloat16 one (docs/fp8.md).

GEMM rows, per backend and size n (an n×n×n product, TFLOP/s = 2n³ / seconds):
  bf16 matmul             ops.matmul of two bfloat16 tensors (the baseline)
  scaled_matmul e4m3      ops.scaled_matmul of pre-quantized e4m3fn operands (b column-major,
                          as a transposed weight), tensor scales, bfloat16 out
  scaled_matmul e4m3 row  the same with per-row / per-column scales and float32 out: the GEMM
                          fp8_linear's row-wise recipe calls
  fp8_linear tensorwise   ops.fp8_linear from bfloat16 inputs: amax, quantize both, GEMM
  fp8_linear blockwise    the same with DeepSeek-V3's 1×128 / 128×128 scales
Each FP8 row (GEMM and training step) says which path ran (`path`): "torch._scaled_mm" when
every scaled_matmul call of the row went through it (torch on CUDA ≥ 8.9, or any torch device
with scaled_mm=native), else "emulation" (a float32 GEMM; block-wise is always one), or the mix;
read from the backend's counters(), so a figure cannot be taken for the other path's.
Training rows: one optimizer step (forward, backward, AdamW) of the bench's training model with
bfloat16 compute, without and with every transformer-block linear in FP8 (the LM head stays out).
On a CPU FP8 hardware gains nothing: an emulation row says what emulating costs, and a
torch._scaled_mm row on the CPU (opted in) what torch's CPU kernel costs.
"""
from __future__ import annotations

import time

import numpy as np

import accel
from accel import ops
from accel.bench.machine import wait
from accel.bench.timing import Case, interleave

SIZES_FULL = (4096, 8192)
SIZES_QUICK = (1024,)


def _gemm_cases(backend, n: int, budget_s: float) -> list[Case]:
    from accel.precision import get_recipe

    rng = np.random.default_rng(n)
    a32, b32 = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    a, b = accel.tensor(a32, accel.bfloat16, backend), accel.tensor(b32, accel.bfloat16, backend)
    qa = ops.cast(ops.div(accel.tensor(a32, backend=backend), 0.01), accel.float8_e4m3fn, True)
    # b column-major (the transpose of a row-major bᵀ), as fp8_linear hands over its weight
    qb = ops.transpose(ops.cast(ops.div(accel.tensor(np.ascontiguousarray(b32.T), backend=backend), 0.01),
                                accel.float8_e4m3fn, True), 0, 1)
    scale = accel.tensor(np.float32(0.01), backend=backend)
    rows_a = accel.tensor(np.full((n, 1), 0.01, np.float32), backend=backend)
    cols_b = accel.tensor(np.full((1, n), 0.01, np.float32), backend=backend)
    del a32, b32
    rows = {
        "bf16 matmul": lambda: ops.matmul(a, b),
        "scaled_matmul e4m3": lambda: ops.scaled_matmul(qa, qb, scale, scale, out_dtype=accel.bfloat16),
        "scaled_matmul e4m3 row": lambda: ops.scaled_matmul(qa, qb, rows_a, cols_b, out_dtype=accel.float32),
        "fp8_linear tensorwise": lambda: ops.fp8_linear(a, b, **get_recipe("tensorwise_current").op_attrs()),
        "fp8_linear blockwise": lambda: ops.fp8_linear(a, b, **get_recipe("blockwise").op_attrs()),
    }

    def timed(fn):
        def run() -> float:
            start = time.perf_counter()
            wait(fn())
            return time.perf_counter() - start
        return run

    group = f"fp8/gemm/{backend.spec}/{n}"
    return [PathCase(f"{group}/{label}", timed(fn), group, budget_s, backend) for label, fn in rows.items()]


class PathCase(Case):
    """A timed row that also tallies, over all its calls, how its scaled_matmul calls ran (the
    backend's counters(): torch's scaled_mm_native / scaled_mm_emulated)."""

    def __init__(self, key, run, group, budget_s, backend):
        super().__init__(key, self._counted, group, budget_s)
        self.inner, self.backend, self.calls = run, backend, {"scaled_mm_native": 0, "scaled_mm_emulated": 0}

    def _counted(self) -> float:
        before = self.backend.counters()
        seconds = self.inner()
        after = self.backend.counters()
        for k in self.calls:
            self.calls[k] += after.get(k, 0) - before.get(k, 0)
        return seconds

    def path(self) -> str:
        if self.key.rsplit("/", 1)[1].startswith("bf16"):
            return "bf16"
        native, emulated = self.calls["scaled_mm_native"], self.calls["scaled_mm_emulated"]
        if native and not emulated:
            return "torch._scaled_mm"
        if native:
            return f"mixed: torch._scaled_mm {native}, emulation {emulated}"
        return "emulation"


def _train_cases(backend, settings) -> list[Case]:
    from accel.autodiff.optim import AdamW
    from accel.models import LlamaConfig
    from accel.models.llama import init_params
    from accel.precision import compare

    config = LlamaConfig(model_type="llama", rms_norm_eps=1e-5, initializer_range=0.02, **settings.train_model)
    windows = np.random.default_rng(settings.seed).integers(
        0, config.vocab_size, (settings.train_batch, settings.train_seq + 1), dtype=np.int64)
    x, y = accel.from_numpy(windows[:, :-1], backend), accel.from_numpy(windows[:, 1:], backend)
    cases = []
    for label, recipe in (("bf16", None), ("fp8 tensorwise_delayed", "tensorwise_delayed"),
                          ("fp8 blockwise", "blockwise")):
        plan = compare.all_blocks_plan(config, recipe) if recipe else None
        loss = compare.mixed_loss(config)
        grads_of = accel.value_and_grad(plan.wrap(loss) if plan else loss)
        opt = AdamW(lr=1e-4, weight_decay=0.1)
        state = {"params": init_params(config, settings.seed, backend, accel.float32)}
        state["opt"] = opt.init(state["params"])

        def step(grads_of=grads_of, opt=opt, state=state) -> float:
            start = time.perf_counter()
            value, grads = grads_of(state["params"], x, y)
            state["params"], state["opt"] = opt.update(state["params"], grads, state["opt"])
            float(value)
            return time.perf_counter() - start

        key = f"fp8/train/{backend.spec}/{label}"
        cases.append(PathCase(key, step, f"fp8/train/{backend.spec}", settings.row_budget_s, backend))
    return cases, config


def run_section(backends, settings, log, progress: bool = True) -> dict:
    sizes = SIZES_QUICK if settings.quick else SIZES_FULL
    out: dict = {"sizes": list(sizes), "gemm": [], "train": []}
    for backend in backends:
        for n in sizes:
            log(f"fp8: {n}^3 GEMMs on {backend.spec} ...")
            cases = interleave(_gemm_cases(backend, n, settings.row_budget_s), settings.train_repeats,
                               f"fp8 gemm {n}", progress)
            base = cases[0].summary().get("median_s")
            for c in cases:
                s = c.summary()
                t = s.get("median_s")
                out["gemm"].append({"backend": backend.spec, "n": n, "row": c.key.rsplit("/", 1)[1],
                                    "path": c.path() if t else None, "scaled_mm_calls": dict(c.calls),
                                    "median_s": t, "tflops": 2 * n ** 3 / t / 1e12 if t else None,
                                    "ratio_to_bf16": base / t if t and base else None, "skipped": s.get("skipped")})
        log(f"fp8: training steps on {backend.spec} ...")
        cases, config = _train_cases(backend, settings)
        interleave(cases, settings.train_repeats, "fp8 train", progress)
        base = cases[0].summary().get("median_s")
        tokens = settings.train_batch * settings.train_seq
        for c in cases:
            s = c.summary()
            t = s.get("median_s")
            out["train"].append({"backend": backend.spec, "row": c.key.rsplit("/", 1)[1], "median_s": t,
                                 "path": c.path() if t else None, "scaled_mm_calls": dict(c.calls),
                                 "tokens_per_s": tokens / t if t else None,
                                 "ratio_to_bf16": base / t if t and base else None, "skipped": s.get("skipped")})
        out["train_model"] = {"parameters": config.num_parameters(), "batch": settings.train_batch,
                              "seq": settings.train_seq}
    return out


def markdown(r: dict) -> list[str]:
    lines = ["## FP8 (docs/fp8.md)", "", "| backend | n | GEMM | path | median s | TFLOP/s | × bf16 |",
             "|---|---:|---|---|---:|---:|---:|"]
    for g in r["gemm"]:
        lines.append(f"| {g['backend']} | {g['n']} | {g['row']} | {g.get('path') or '–'} | "
                     + (f"{g['median_s']:.3f} | {g['tflops']:.3f} | {g['ratio_to_bf16']:.2f} |" if g["median_s"]
                        else f"skipped: {g['skipped']} | | |"))
    m = r.get("train_model", {})
    lines += ["", f"Training step ({m.get('parameters', 0) / 1e6:.1f}M parameters, batch {m.get('batch')} × "
              f"{m.get('seq')} tokens, bfloat16 compute):", "",
              "| backend | step | path | median s | tokens/s | × bf16 |", "|---|---|---|---:|---:|---:|"]
    for t in r["train"]:
        lines.append(f"| {t['backend']} | {t['row']} | {t.get('path') or '–'} | "
                     + (f"{t['median_s']:.3f} | {t['tokens_per_s']:,.0f} | {t['ratio_to_bf16']:.2f} |" if t["median_s"]
                        else f"skipped: {t['skipped']} | | |"))
    return lines + [""]
