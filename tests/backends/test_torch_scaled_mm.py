"""The torch backend's torch._scaled_mm path (backends/torch/float8.py), run on the CPU: torch
implements `_scaled_mm` there too, so the call convention (row-major a, column-major b, 0-d or
(M, 1)/(1, N) float32 scales), the CUDA rules' fallbacks and the refusal cache run here; only
FP8 tensor-core speed does not.

The bound. Given the same float8 operands, `_scaled_mm` and the emulation compute the same sum
of K products in float32 in different orders: the emulation multiplies exactly (float8 products
fit float32), accumulates (K - 1 roundings) and scales the result (2 roundings); torch's CPU
kernel scales each operand first (row-wise: 2 roundings), multiplies (1) and accumulates. Each is
within γ(K + 3) · S of the exact value, S = Σ_k |a_ik b_kj| · |sa_i| · |sb_j| and
γ(n) = n·u / (1 - n·u), u = 2^-24 (Higham's bound for a float32 dot product), so they differ by at
most 2·γ(K + 3)·S elementwise. A bfloat16 output rounds both once more: one bfloat16 step more.
At K = 64 that is 8e-6 of S; a dropped or misplaced scale, a transposed operand or a wrong
layout moves entries by far more than S itself.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accel  # noqa: E402
from accel import ops  # noqa: E402
from accel.backends.torch import float8 as F8  # noqa: E402
from accel.conformance.judge import ulp  # noqa: E402
from accel.core import dtypes as dt  # noqa: E402

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
U = 2.0 ** -24
# FP8 tensor cores keep about 14 bits of a partial sum before cuBLASLt promotes it to float32
# (DeepSeek-V3 technical report, §3.3.2, on H800): the unit of the bound on the GPU
U_TENSOR_CORE = 2.0 ** -14


def gamma(n: int, unit: float = U) -> float:
    return n * unit / (1 - n * unit)


@pytest.fixture(autouse=True)
def tb(torch_cpu_scaled_mm):
    return torch_cpu_scaled_mm


def _operands(m, k, n, fa, fb, scales, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(m, k, generator=g) * 4).to(fa)
    b = (torch.randn(n, k, generator=g) * 4).to(fb).t()  # column-major, as fp8_linear's weight
    sa = torch.rand(m, 1, generator=g) + 0.5 if scales == "row" else torch.tensor(0.75)
    sb = torch.rand(1, n, generator=g) + 0.5 if scales in ("row", "mixed") else torch.tensor([0.125])
    return a, b, sa, sb


def _host(t):
    """A torch CPU tensor as numpy (float8 through ml_dtypes, which accel stores it as)."""
    if t.dtype in (E4, E5):
        return t.contiguous().view(torch.uint8).numpy().view(dt.as_dtype(str(t.dtype).removeprefix("torch.")).numpy)
    return t.numpy()


def _bound(a, b, sa, sb, emulated, out_dtype, unit: float = U):
    """2·γ(K + 3)·S elementwise (module doc), plus one bfloat16 step for a bfloat16 output."""
    k = a.shape[1]
    mag = (a.double().abs() @ b.double().abs()) * sa.double().abs() * sb.double().abs()
    f32 = 2 * gamma(k + 3, unit) * mag.numpy()
    if out_dtype is dt.bfloat16:
        f32 = f32 + ulp(np.abs(emulated.float().numpy().astype(np.float64)) + f32, dt.bfloat16)
    return f32


ALIGNED = [(32, 64, 48), (1, 32, 16)]        # K, N multiples of 16 (M is free): _scaled_mm runs
MISALIGNED = [(24, 80, 40), (20, 72, 48)]    # N = 40, K = 72: the CUDA rule sends them to the emulation
PAIRS = [(E4, E4), (E4, E5), (E5, E4)]


@pytest.mark.parametrize("out_dtype", [dt.float32, dt.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("scales", ["tensor", "row", "mixed"])
@pytest.mark.parametrize("fa,fb", PAIRS, ids=lambda f: str(f).removeprefix("torch.float8_"))
@pytest.mark.parametrize("shape", ALIGNED + MISALIGNED, ids=lambda s: "x".join(map(str, s)))
def test_native_kernel_equals_the_emulation(shape, fa, fb, scales, out_dtype):
    a, b, sa, sb = _operands(*shape, fa, fb, scales)
    kernel = F8.ScaledMM("torch:cpu")
    got = kernel(a, b, sa, sb, out_dtype=out_dtype)
    want = F8.scaled_matmul_emulated(a, b, sa, sb, out_dtype=out_dtype)
    assert got.dtype == want.dtype and got.shape == (shape[0], shape[2])
    aligned = shape in ALIGNED
    assert kernel.counters() == {"scaled_mm_native": int(aligned), "scaled_mm_emulated": int(not aligned)}
    diff = np.abs(got.double().numpy() - want.double().numpy())
    if aligned:
        bound = _bound(a, b, sa, sb, want, out_dtype)
        assert (diff <= bound).all(), (diff.max(), diff[diff > bound][:5], bound[diff > bound][:5])
    else:  # the fallback is the emulation itself
        assert diff.max() == 0
        assert accel.dispatch_stats()["torch:cpu"]["scaled_matmul"]["decomposed"] == 1


@pytest.mark.parametrize("out_dtype", [dt.float32, dt.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("scales", ["tensor", "row"])
def test_both_e5m2_take_the_emulation_and_say_so(scales, out_dtype):
    a, b, sa, sb = _operands(32, 64, 48, E5, E5, scales)
    kernel = F8.ScaledMM("torch:cpu")
    with pytest.warns(accel.AccelWarning, match="e5m2 x e5m2"):
        got = kernel(a, b, sa, sb, out_dtype=out_dtype)
    assert torch.equal(got, F8.scaled_matmul_emulated(a, b, sa, sb, out_dtype=out_dtype))
    assert kernel.counters() == {"scaled_mm_native": 0, "scaled_mm_emulated": 1}
    assert accel.dispatch_stats()["torch:cpu"]["scaled_matmul"]["decomposed"] == 1


def test_misaligned_fallback_warns_once_per_cause_and_counts_every_call(recwarn):
    a, b, sa, sb = _operands(24, 80, 40, E4, E4, "tensor")
    kernel = F8.ScaledMM("torch:cpu")
    for _ in range(3):
        kernel(a, b, sa, sb, out_dtype=dt.float32)
    warned = [w for w in recwarn if issubclass(w.category, accel.AccelWarning)]
    assert len(warned) == 1 and "multiples of 16" in str(warned[0].message)
    assert kernel.emulated_calls == 3
    assert accel.dispatch_stats()["torch:cpu"]["scaled_matmul"]["decomposed"] == 3


def test_a_refusal_is_cached_per_key_counted_and_not_retried(monkeypatch):
    # torch's CPU _scaled_mm takes what the op lets through, so the refusal is caused by calling
    # the kernel directly with a float64 scale: torch raises ValueError("Invalid scaling ...")
    a, b, _, sb = _operands(32, 64, 48, E4, E4, "tensor")
    sa = torch.tensor(0.75, dtype=torch.float64)
    real, calls = torch._scaled_mm, []

    def spy(*args, **kwargs):  # the real torch._scaled_mm, its calls counted
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    kernel = F8.ScaledMM("torch:cpu")
    with pytest.warns(accel.AccelWarning, match="refused it: Invalid scaling configuration"):
        first = kernel(a, b, sa, sb, out_dtype=dt.float32)
    second = kernel(a, b, sa, sb, out_dtype=dt.float32)
    assert len(calls) == 1  # the second call went straight to the emulation
    assert list(kernel.refused) == [(E4, E4, torch.float32, "tensor")]
    want = F8.scaled_matmul_emulated(a, b, sa, sb, out_dtype=dt.float32)
    assert torch.equal(first, want) and torch.equal(second, want)
    assert kernel.counters() == {"scaled_mm_native": 0, "scaled_mm_emulated": 2}
    assert accel.dispatch_stats()["torch:cpu"]["scaled_matmul"]["decomposed"] == 2
    # another key (bfloat16 output) is tried afresh; another scale kind still runs natively
    kernel(a, b, sa, sb, out_dtype=dt.bfloat16)
    _, _, row_a, row_b = _operands(32, 64, 48, E4, E4, "row")
    kernel(a, b, row_a, row_b, out_dtype=dt.bfloat16)
    assert len(calls) == 3 and kernel.native_calls == 1 and len(kernel.refused) == 2


def test_rowwise_fp32_output_runs_natively_and_the_cutlass_rule_needs_e4m3_b():
    # fp8_gemm asks for float32: row-wise float32 output must take _scaled_mm (torch allows it)
    a, b, sa, sb = _operands(32, 64, 48, E5, E4, "row")
    kernel = F8.ScaledMM("torch:cpu")
    kernel(a, b, sa, sb, out_dtype=dt.float32)
    assert kernel.native_calls == 1
    # where torch's CUTLASS row-wise kernel runs (CC 8.9, 10+, or cuBLAS < 12.9), an e5m2 b goes
    # to the emulation ...
    assert [F8.cutlass_rowwise(cc, v) for cc, v in (((8, 9), "12.9"), ((9, 0), "12.9"), ((9, 0), "12.8"),
                                                    ((10, 0), "13.0"), ((9, 0), "13.0"))] == [True, False, True, True, False]
    sm89 = F8.ScaledMM("torch:cpu", rowwise_needs_e4m3_b=True)
    a, b, sa, sb = _operands(32, 64, 48, E4, E5, "row")
    with pytest.warns(accel.AccelWarning, match="e4m3fn b only"):
        sm89(a, b, sa, sb, out_dtype=dt.float32)
    # ... tensor-wise scales with the same dtypes do not
    sm89(a, b, torch.tensor(0.5), torch.tensor(2.0), out_dtype=dt.float32)
    assert sm89.counters() == {"scaled_mm_native": 1, "scaled_mm_emulated": 1}


# --- the backend option ----------------------------------------------------------------------
def test_configure_switches_the_kernel_of_the_op(tb):
    a, b, sa, sb = _operands(32, 64, 48, E4, E4, "row")
    args = [accel.from_numpy(_host(t), backend=tb) for t in (a, b, sa, sb)]
    tb.configure(scaled_mm="auto")  # on the CPU: the emulation
    assert tb.counters() == {} and "emulated" in tb.device_facts()["scaled_matmul"]
    emulated = ops.scaled_matmul(*args, out_dtype=accel.float32).numpy()
    tb.configure(scaled_mm="native")
    assert tb.native_scaled_mm and "opted in" in tb.device_facts()["scaled_matmul"]
    native = ops.scaled_matmul(*args, out_dtype=accel.float32).numpy()
    assert tb.counters() == {"scaled_mm_native": 1, "scaled_mm_emulated": 0}
    bound = _bound(a, b, sa, sb, torch.from_numpy(emulated), dt.float32)
    assert (np.abs(native.astype(np.float64) - emulated) <= bound).all()
    tb.reset_counters()
    assert tb.counters() == {"scaled_mm_native": 0, "scaled_mm_emulated": 0}
    tb.configure(scaled_mm="emulate")
    ops.scaled_matmul(*args, out_dtype=accel.float32)
    assert tb.counters() == {} and not tb.native_scaled_mm
    with pytest.raises(accel.BackendError, match="unknown scaled_mm mode 'fast'") as err:
        tb.configure(scaled_mm="fast")
    assert "auto" in str(err.value) and "emulate" in str(err.value)


def test_the_environment_variable_opts_in_at_backend_creation():
    code = ("import accel; b = accel.get_backend('torch:cpu'); "
            "print(b.scaled_mm_mode, b.native_scaled_mm, b.device_facts()['scaled_matmul'])")
    env = dict(os.environ, **{F8.SCALED_MM_ENV: "native", "OMP_NUM_THREADS": "1"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("native True torch._scaled_mm"), out.stdout


# --- fp8_linear through the native path ------------------------------------------------------
def _fp8_linear_step(backend, x, w, r, granularity):
    xt, wt, rt = (accel.tensor(v, backend=backend) for v in (x, w, r))

    def loss(x, w):  # dL/dy = r whatever y is: both paths quantize the same gradient
        return ops.sum(ops.mul(ops.fp8_linear(x, w, granularity=granularity), rt))

    dx, dw = accel.grad(loss, (0, 1))(xt, wt)
    y = ops.fp8_linear(xt, wt, granularity=granularity)
    return [t.numpy().astype(np.float64) for t in (y, dx, dw)]


@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("m", [32, 24], ids=["all-native", "dw-misaligned"])
def test_fp8_linear_forward_and_backward_native_equals_emulated(tb, granularity, m):
    k, n = 48, 64
    rng = np.random.default_rng(7)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, 3] *= 20.0  # an outlier channel: row-, column- and tensor-wise scales differ
    w = (rng.standard_normal((n, k)) * 0.1).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    tb.configure(scaled_mm="emulate")
    want = _fp8_linear_step(tb, x, w, r, granularity)
    tb.configure(scaled_mm="native")
    accel.reset_dispatch_stats()
    got = _fp8_linear_step(tb, x, w, r, granularity)
    # four GEMMs (forward in grad, dx, dw, forward again); dw contracts M, misaligned at M = 24
    fallbacks = 0 if m % 16 == 0 else 1
    assert tb.counters() == {"scaled_mm_native": 4 - fallbacks, "scaled_mm_emulated": fallbacks}
    assert accel.dispatch_stats().get("torch:cpu", {}).get("scaled_matmul", {}).get("decomposed", 0) == fallbacks
    # S of each GEMM from the unquantized operands: a float8 value and its scale reproduce |v|
    # within (1 + 2^-3) (e5m2's half step, e4m3fn's is 2^-4), so S ≤ 1.27 |A|·|B|
    ax, aw, ar = (np.abs(v.astype(np.float64)) for v in (x, w, r))
    bounds = [2 * gamma(k + 3) * 1.27 * (ax @ aw.T),      # y = x wᵀ, contracting K
              2 * gamma(n + 3) * 1.27 * (ar @ aw),        # dx = g w, contracting N
              2 * gamma(m + 3) * 1.27 * (ar.T @ ax)]      # dw = gᵀ x, contracting M
    for name, g, e, bound in zip(("y", "dx", "dw"), got, want, bounds):
        assert np.abs(e).max() > 1.0  # real values, not an all-zero agreement
        assert (np.abs(g - e) <= bound).all(), (name, np.abs(g - e).max())


# --- on FP8 hardware (benchmarks/gpu_check.sh runs the `cuda` tests) -------------------------
def _fp8_gpu() -> bool:
    return torch.cuda.is_available() and torch.version.hip is None and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.cuda
@pytest.mark.skipif(not _fp8_gpu(), reason="needs an NVIDIA GPU of compute capability 8.9+")
@pytest.mark.parametrize("fa,fb,scales,out_dtype", [
    (E4, E4, "tensor", dt.bfloat16), (E4, E4, "row", dt.float32),    # bench GEMM, fp8_linear forward
    (E5, E4, "row", dt.float32), (E4, E5, "tensor", dt.float32)])     # input-gradient GEMMs
def test_cuda_runs_every_fp8_linear_form_natively(fa, fb, scales, out_dtype):
    gpu = accel.get_backend("torch:cuda")
    gpu.configure(scaled_mm="auto")
    a, b, sa, sb = _operands(64, 128, 96, fa, fb, scales)
    bt = ops.transpose(accel.from_numpy(_host(b.t()), backend=gpu), 0, 1)  # column-major, as fp8_linear
    args = [accel.from_numpy(_host(a), backend=gpu), bt] + [accel.from_numpy(_host(s), backend=gpu) for s in (sa, sb)]
    gpu.reset_counters()
    got = ops.scaled_matmul(*args, out_dtype=out_dtype)
    assert gpu.counters() == {"scaled_mm_native": 1, "scaled_mm_emulated": 0}
    want = F8.scaled_matmul_emulated(a, b, sa, sb, out_dtype=out_dtype)
    diff = np.abs(ops.cast(got, accel.float32).numpy().astype(np.float64) - want.double().numpy())
    # a wrong layout or scale moves entries by ~S; the tensor-core accumulation by far less
    assert (diff <= _bound(a, b, sa, sb, want, out_dtype, U_TENSOR_CORE)).all(), diff.max()
