"""The torch backend itself: device naming and discovery, device facts and capabilities, host
transfer in every dtype, float8 casts bit for bit against ml_dtypes, scaled_matmul against numpy
float64, DLPack zero-copy, errors. CUDA tests carry `@pytest.mark.cuda` and skip without a GPU.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import sys

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accel  # noqa: E402
from accel.core import dtypes as dt  # noqa: E402
from accel.conformance.tolerances import ACCUMULATING  # noqa: E402
from accel.precision.metrics import nmse as nmse_of  # noqa: E402
from accel import ops  # noqa: E402
from accel.backends.torch import backend as torch_backend  # noqa: E402
from accel.backends.torch.backend import TorchBackend  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")


@pytest.fixture(scope="module", autouse=True)
def tb(request):
    """torch:cpu (these tests are about the backend itself; CUDA ones say so), skipped when
    --backend names only other backends."""
    chosen = request.config.getoption("--backend") or []
    if chosen and not any(n.split(":")[0] == "torch" for n in chosen):
        pytest.skip("no torch backend among --backend")
    return accel.get_backend("torch:cpu")


# --- naming, discovery, priority ------------------------------------------------------------
def test_names_resolve_to_one_instance_per_device(tb):
    assert tb.spec == "torch:cpu" and tb.device == "cpu"
    assert accel.get_backend("torch:cpu") is tb
    assert TorchBackend("cpu") is tb  # "torch:cuda" and "torch:cuda:0" share an instance the same way
    assert TorchBackend._normalize("cuda") == "cuda:0"
    assert TorchBackend._normalize("npu:3") == "npu:3"
    default = accel.get_backend("torch")
    assert default.spec == ("torch:cuda:0" if HAS_CUDA else "torch:cpu")


def test_status_lists_devices_and_why_others_are_absent():
    status = accel.available_backends()["torch"]
    assert status.available and "cpu" in status.devices
    found, absent = torch_backend.discover()
    for kind in ("npu", "mlu", "musa"):
        module = torch_backend.DEVICE_TYPES[kind][0]
        if kind not in found and module not in sys.modules:
            assert f"{kind}: {module} not installed" in status.reason or kind in absent
    if not HAS_CUDA:
        assert "cuda:" in status.reason
        with pytest.raises(accel.BackendError, match="no device 'cuda'") as err:
            accel.get_backend("torch:cuda")
        assert "torch:cpu" in str(err.value)  # the hint lists what exists


def test_vendor_extensions_are_imported_only_when_installed(tmp_path, monkeypatch):
    # Real (tiny) packages on sys.path stand in for vendor wheels: one whose import fails, one
    # that registers a device module with no device visible, as torch_npu does on a host
    # without Ascend cards.
    (tmp_path / "torch_musa").mkdir()
    (tmp_path / "torch_musa" / "__init__.py").write_text("raise ImportError('MUSA driver not found')\n")
    (tmp_path / "torch_mlu").mkdir()
    (tmp_path / "torch_mlu" / "__init__.py").write_text(
        "import torch, types\n"
        "torch.mlu = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch_backend.discover.cache_clear()
    try:
        found, absent = torch_backend.discover()
        assert "musa" not in found and "failed to import" in absent["musa"] and "MUSA driver" in absent["musa"]
        assert absent["mlu"] == "no mlu device visible"
        assert "npu" in found or absent["npu"] == "torch_npu not installed"
    finally:
        monkeypatch.delattr(torch, "mlu", raising=False)
        sys.modules.pop("torch_mlu", None)
        sys.modules.pop("torch_musa", None)
        torch_backend.discover.cache_clear()


def test_priority_accelerators_first_numpy_last():
    from accel.backends.numpy.backend import NumpyBackend

    found, _ = torch_backend.discover()
    assert TorchBackend.priority == (100 if found else 10)
    assert TorchBackend.priority > NumpyBackend.priority


# --- facts and capabilities -----------------------------------------------------------------
def test_device_facts_in_deepspeed_style(tb):
    facts = tb.device_facts()
    for key in ("device_count", "device_name", "memory_total_bytes", "memory_allocated_bytes",
                "memory_peak_bytes", "bf16_supported", "fp16_supported", "fp8_supported",
                "collective_backend", "scaled_matmul", "float8"):
        assert key in facts, key
    assert facts["collective_backend"] == "gloo"
    assert facts["device_count"] == 1 and facts["memory_total_bytes"] > 0
    assert "emulated" in facts["scaled_matmul"]
    assert "add" in facts["float8_emulated_ops"] and "reshape" not in facts["float8_emulated_ops"]
    tb.synchronize()
    tb.manual_seed(123)
    a = torch.randn(3)
    tb.manual_seed(123)
    assert torch.equal(a, torch.randn(3))


def test_capabilities_cover_every_primitive_and_the_fused_composites(tb):
    caps = tb.capabilities()
    assert {op.name for op in ops.PRIMITIVES} <= caps.native_ops
    assert {"attention", "rms_norm", "silu", "gelu", "softmax", "log_softmax", "cross_entropy",
            "embedding", "linear", "scaled_matmul"} <= caps.native_ops
    assert caps.dtypes == {d.name for d in dt.ALL_DTYPES}
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False


def test_accel_info_shows_torch_cpu():
    from accel.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["info", "--backend", "torch"])
    text = out.getvalue()
    assert code == 0 and "torch: available" in text and "torch:cpu" in text
    n = len(ops.PRIMITIVES)
    assert f"primitives native: {n}/{n}" in text
    assert "collective_backend: gloo" in text


# --- host transfer --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", dt.ALL_DTYPES, ids=lambda d: d.name)
def test_host_round_trip_is_exact_for_every_dtype(tb, dtype):
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((3, 5)) * 10).astype(np.float32).astype(dtype.numpy)
    for array in (host, host[:, ::2], host.T, np.broadcast_to(host[:1], (4, 5)), host[0, 0][()],
                  np.ascontiguousarray(host[::-1])):
        array = np.asarray(array)
        t = accel.from_numpy(array, backend=tb)
        assert t.dtype is dtype and t.shape == array.shape
        back = t.numpy()
        assert back.dtype == array.dtype
        assert np.array_equal(np.ascontiguousarray(back).reshape(-1).view(np.uint8),
                              np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def test_unsupported_dtypes_are_clear_errors(tb):
    with pytest.raises(accel.DTypeError, match="uint16"):
        tb.from_numpy(np.zeros(3, np.uint16))
    with pytest.raises(accel.DTypeError, match="complex64"):
        tb.dtype_of(torch.zeros(2, dtype=torch.complex64))


# --- casts: bit for bit against ml_dtypes ---------------------------------------------------
def _cast_inputs(src):
    rng = np.random.default_rng(1)
    if src is dt.bool_:
        return rng.random(64) > 0.5
    if src.is_integer:
        return rng.integers(-100, 100, 256).astype(src.numpy)
    specials = [0.0, -0.0, np.nan, np.inf, -np.inf, 448.0, 449.0, 464.0, 465.0, 480.0, 57344.0,
                61439.0, 61440.0, 65504.0, 1e5, 1e-8, 2.0 ** -9, 2.0 ** -10, 2.0 ** -16, 2.0 ** -17]
    values = [np.array(specials), rng.standard_normal(512) * 10, rng.standard_normal(256) * 1e-3,
              rng.standard_normal(256) * 300]
    for f8 in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):  # every value and every midpoint
        grid = np.arange(256, dtype=np.uint8).view(f8).astype(np.float64)
        grid = np.sort(grid[np.isfinite(grid)])
        mids = (grid[1:] + grid[:-1]) / 2
        values += [grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)]
    half = np.arange(0, 65536, 97, dtype=np.uint16).view(np.float16).astype(np.float64)
    half = np.sort(half[np.isfinite(half)])
    half_mids = (half[1:] + half[:-1]) / 2
    values += [half_mids, half_mids * (1 + 2.0 ** -40)]  # float64 -> float16 double-rounding traps
    x = np.concatenate(values)
    with np.errstate(all="ignore"):
        return x.astype(np.float32).astype(src.numpy) if src.itemsize < 4 else x.astype(src.numpy)


CAST_PAIRS = [(s, d, sat) for s, d in itertools.product(dt.ALL_DTYPES, dt.ALL_DTYPES)
              for sat in ((False, True) if d in dt.FLOAT8_DTYPES else (False,))]


@pytest.mark.parametrize("src,dst,saturate", CAST_PAIRS,
                         ids=[f"{s.name}-{d.name}{'-sat' if sat else ''}" for s, d, sat in CAST_PAIRS])
def test_cast_is_bit_exact(tb, src, dst, saturate):
    x = _cast_inputs(src)
    if src.is_floating and dst.is_integer:  # out-of-range float -> int is undefined in C and numpy
        with np.errstate(all="ignore"):
            wide = x.astype(np.float64)
        x = x[np.isfinite(wide) & (np.abs(wide) < 120)]
    got = ops.cast(accel.from_numpy(x, backend=tb), dst, saturate).numpy()
    with np.errstate(all="ignore"):
        want = ops.cast.reference(x, dtype=dst, saturate=saturate)
    assert got.dtype == want.dtype
    same = got.view(np.uint8).reshape(len(x), -1) == want.view(np.uint8).reshape(len(x), -1)
    same = same.all(axis=1)
    if dst.is_floating:  # any NaN payload is the same NaN
        same |= np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (f"{bad.size} mismatches, e.g. x={x[bad[:3]].astype(np.float64)} "
                           f"got={got[bad[:3]]} want={want[bad[:3]]}")


def test_float8_overflow_rules(tb):
    x = accel.tensor([500.0, -1e6, float("inf"), 464.0], backend=tb)
    e4 = ops.cast(x, accel.float8_e4m3fn).numpy().astype(np.float64)
    assert np.isnan(e4[:3]).all() and e4[3] == 448.0  # no infinity: NaN; 464 ties to even
    sat = ops.cast(x, accel.float8_e4m3fn, saturate=True).numpy().astype(np.float64)
    assert sat.tolist() == [448.0, -448.0, 448.0, 448.0]
    e5 = ops.cast(accel.tensor([1e6, -7e4], backend=tb), accel.float8_e5m2).numpy().astype(np.float64)
    assert e5.tolist() == [np.inf, -np.inf]


def test_float8_arithmetic_is_emulated_through_float32(tb):
    a = np.array([1.0, 2.5, -3.0, 0.4375], np.float32).astype(ml_dtypes.float8_e4m3fn)
    b = np.array([0.125, 1.5, 7.0, 0.0625], np.float32).astype(ml_dtypes.float8_e4m3fn)
    got = ops.add(accel.from_numpy(a, backend=tb), accel.from_numpy(b, backend=tb))
    assert got.dtype is accel.float8_e4m3fn
    want = (a.astype(np.float32) + b.astype(np.float32)).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(got.numpy().view(np.uint8), want.view(np.uint8))


# --- scaled_matmul --------------------------------------------------------------------------
def _quantized(shape, f8, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 4).astype(np.float32).astype(f8.numpy)


SCALED = [(dt.float8_e4m3fn, dt.float8_e4m3fn, "tensor", dt.bfloat16),
          (dt.float8_e4m3fn, dt.float8_e4m3fn, "row", dt.bfloat16),
          (dt.float8_e4m3fn, dt.float8_e5m2, "tensor", dt.float32),
          (dt.float8_e5m2, dt.float8_e5m2, "row", dt.float32)]


@pytest.mark.parametrize("fa,fb,scales,out_dtype", SCALED,
                         ids=[f"{a.name}-{b.name}-{s}-{o.name}" for a, b, s, o in SCALED])
@pytest.mark.parametrize("name", ["torch:cpu", "numpy"])
def test_scaled_matmul_matches_float64(name, fa, fb, scales, out_dtype):
    m, k, n = 24, 80, 40
    a, b = _quantized((m, k), fa, 2), _quantized((k, n), fb, 3)
    rng = np.random.default_rng(4)
    if scales == "row":
        sa, sb = (rng.random((m, 1)) + 0.5).astype(np.float32), (rng.random((1, n)) + 0.5).astype(np.float32)
    else:
        sa, sb = np.asarray(0.75, np.float32), np.asarray([0.125], np.float32)
    backend = accel.get_backend(name)
    out = ops.scaled_matmul(*(accel.from_numpy(x, backend=backend) for x in (a, b, sa, sb)), out_dtype=out_dtype)
    assert out.dtype is out_dtype and out.shape == (m, n)
    ref = ops.scaled_matmul.reference(a, b, sa, sb, out_dtype=out_dtype)
    got = out.numpy().astype(np.float64)
    nmse = nmse_of(got, ref)
    scaled_max = np.max(np.abs(got - ref)) / np.sqrt(np.mean(ref ** 2))
    limits = ACCUMULATING[out_dtype.name]  # the conformance tolerances (docs/conformance.md)
    assert nmse <= limits[0] and scaled_max <= limits[1], (nmse, scaled_max)


def test_scaled_matmul_runs_natively_on_torch_and_decomposes_on_numpy(tb):
    a, b = _quantized((4, 16), dt.float8_e4m3fn, 5), _quantized((16, 8), dt.float8_e4m3fn, 6)
    s = np.asarray(1.0, np.float32)
    accel.reset_dispatch_stats()
    for name in ("torch:cpu", "numpy"):
        ops.scaled_matmul(*(accel.from_numpy(x, backend=name) for x in (a, b, s, s)))
    stats = accel.dispatch_stats()
    assert "torch:cpu" not in stats or stats["torch:cpu"].get("scaled_matmul", {}).get("decomposed", 0) == 0
    assert stats["numpy"]["scaled_matmul"]["decomposed"] == 1


def test_scaled_matmul_rejects_bad_inputs(tb):
    a, b = _quantized((4, 16), dt.float8_e4m3fn, 5), _quantized((16, 8), dt.float8_e4m3fn, 6)
    s = np.asarray(1.0, np.float32)
    A, B, S = (accel.from_numpy(x, backend=tb) for x in (a, b, s))
    with pytest.raises(accel.DTypeError, match="float8") as err:
        ops.scaled_matmul(ops.cast(A, accel.float32), B, S, S)
    assert "HINT" in str(err.value)
    with pytest.raises(accel.ShapeError, match="per-row"):
        ops.scaled_matmul(A, B, accel.from_numpy(np.ones((16,), np.float32), backend=tb), S)
    with pytest.raises(accel.ShapeError, match="per-column"):
        ops.scaled_matmul(A, B, S, accel.from_numpy(np.ones((4, 1), np.float32), backend=tb))
    with pytest.raises(accel.DTypeError, match="out_dtype"):
        ops.scaled_matmul(A, B, S, S, out_dtype=accel.float16)
    with pytest.raises(accel.DTypeError, match="scale_a must be float32"):
        ops.scaled_matmul(A, B, ops.cast(S, accel.bfloat16), S)


# --- DLPack ---------------------------------------------------------------------------------
def test_from_dlpack_numpy_to_torch_is_zero_copy(tb):
    host = np.arange(6, dtype=np.float32)
    t = accel.from_dlpack(host, backend=tb)
    assert t.backend is tb and t.data.data_ptr() == host.ctypes.data
    bf = np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16)  # ml_dtypes: viewed, still shared
    t = accel.from_dlpack(bf, backend=tb)
    assert t.dtype is accel.bfloat16 and t.data.data_ptr() == bf.ctypes.data


def test_from_dlpack_torch_to_numpy_backend_is_zero_copy(tb):
    t = accel.tensor([1.0, 2.0, 3.0], backend=tb)
    n = accel.from_dlpack(t, backend="numpy")
    assert n.backend.spec == "numpy" and np.shares_memory(n.numpy(), t.numpy())
    raw = torch.arange(4.0)
    n = accel.from_dlpack(raw, backend="numpy")
    raw[0] = 9.0
    assert n.numpy()[0] == 9.0
    bf = accel.tensor([1.0, 2.0], dtype="bfloat16", backend=tb)
    n = accel.from_dlpack(bf, backend="numpy")
    assert n.dtype is accel.bfloat16 and np.shares_memory(n.numpy(), bf.numpy())


def test_tensor_exports_dlpack(tb):
    t = accel.tensor([[1.0, 2.0], [3.0, 4.0]], backend=tb)
    assert torch.from_dlpack(t).data_ptr() == t.data.data_ptr()
    np.testing.assert_array_equal(np.from_dlpack(t), t.numpy())


def test_from_dlpack_jax_to_torch_is_zero_copy(tb):
    jnp = pytest.importorskip("jax.numpy")
    j = jnp.arange(8.0, dtype=jnp.float32)
    t = accel.from_dlpack(j, backend=tb)
    assert t.data.data_ptr() == j.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.arange(8.0, dtype=np.float32))


def test_from_dlpack_rejects_non_arrays(tb):
    with pytest.raises(accel.AccelError, match="__dlpack__"):
        accel.from_dlpack([1, 2, 3], backend=tb)


# --- errors ---------------------------------------------------------------------------------
def test_native_errors_name_op_backend_shapes_and_dtypes(tb):
    a = accel.from_numpy(np.zeros((2, 3), np.float32), backend=tb)
    b = accel.from_numpy(np.zeros((4, 5), np.float32), backend=tb)
    with pytest.raises(accel.ShapeError) as err:
        ops.matmul(a, b)
    message = str(err.value)
    assert "matmul" in message and "torch:cpu" in message and "float32[2, 3]" in message and "HINT" in message
    with pytest.raises(accel.BackendError, match="different backends"):
        ops.add(a, accel.from_numpy(np.zeros((2, 3), np.float32), backend="numpy"))


def test_strict_mode_has_nothing_to_refuse_on_torch(tb):
    x = accel.from_numpy(np.ones((2, 4), np.float32), backend=tb)
    accel.reset_dispatch_stats()
    with accel.strict():
        ops.attention(x.reshape(1, 1, 2, 4), x.reshape(1, 1, 2, 4), x.reshape(1, 1, 2, 4), causal=True)
        ops.cross_entropy(x, accel.tensor([0, 3], backend=tb))
        ops.mean(ops.gelu(x), -1)
    counts = accel.dispatch_stats().get("torch:cpu", {})
    assert all(c["fallback"] == 0 and c["decomposed"] == 0 for c in counts.values()), counts


# --- CUDA -----------------------------------------------------------------------------------
@pytest.mark.cuda
@cuda
def test_cuda_names_facts_and_identity():
    b = accel.get_backend("torch:cuda")
    assert b is accel.get_backend("torch:cuda:0") and b.spec == "torch:cuda:0"
    facts = b.device_facts()
    assert facts["collective_backend"] == "nccl" and "compute_capability" in facts
    assert facts["memory_total_bytes"] > 0
    b.synchronize()


@pytest.mark.cuda
@cuda
def test_cuda_ops_match_the_reference():
    b = accel.get_backend("torch:cuda")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    out = ops.linear(accel.from_numpy(x, backend=b), accel.from_numpy(w, backend=b)).numpy()
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.sum((out - ref) ** 2) / np.sum(ref ** 2) < 1e-10  # tf32 off
    q = rng.standard_normal((1, 4, 5, 64)).astype(np.float32).astype(ml_dtypes.bfloat16)
    mask = np.ones((5, 5), bool)
    mask[2] = False
    got = ops.attention(*(accel.from_numpy(a, backend=b) for a in (q, q, q, mask))).numpy()
    assert not np.isnan(got.astype(np.float32)).any() and not got[0, :, 2].astype(np.float32).any()
    with pytest.raises(accel.OpError, match="out of bounds"):
        ops.gather(accel.from_numpy(x, backend=b), accel.tensor([99], backend=b), 0)
    i = accel.tensor([1, 2], backend=b)
    assert ops.matmul(ops.reshape(i, (1, 2)), ops.reshape(i, (2, 1))).item() == 5


@pytest.mark.cuda
@cuda
def test_cuda_scaled_matmul_native_matches_emulation():
    b = accel.get_backend("torch:cuda")
    m, k, n = 32, 64, 48
    a, w = _quantized((m, k), dt.float8_e4m3fn, 8), _quantized((k, n), dt.float8_e4m3fn, 9)
    rng = np.random.default_rng(10)
    sa, sb = (rng.random((m, 1)) + 0.5).astype(np.float32), (rng.random((1, n)) + 0.5).astype(np.float32)
    args = [accel.from_numpy(x, backend=b) for x in (a, w, sa, sb)]
    out = ops.scaled_matmul(*args).numpy().astype(np.float64)
    ref = ops.scaled_matmul.reference(a, w, sa, sb)
    assert np.sum((out - ref) ** 2) / np.sum(ref ** 2) < 5e-5
    assert ("_scaled_mm" in b.device_facts()["scaled_matmul"]) == b.native_scaled_mm
