"""The ONNX Runtime backend's own contract: providers, cached single-node sessions, raw
bfloat16/float8 I/O, honest dtype support (fallbacks counted), strict mode, compiled graphs."""
import ml_dtypes
import numpy as np
import pytest

import accel
from accel import ops

ort = pytest.importorskip("onnxruntime")
from accel.backends.onnxruntime.backend import PROVIDERS, OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module")
def rt():
    return accel.get_backend("onnxruntime:cpu")


def test_providers_map_to_execution_provider_names(rt):
    assert PROVIDERS["cann"] == "CANNExecutionProvider" and PROVIDERS["cuda"] == "CUDAExecutionProvider"
    status = accel.available_backends()["onnxruntime"]
    assert "cpu" in status.devices
    assert all(PROVIDERS[d] in ort.get_available_providers() for d in status.devices)
    assert rt.provider == "CPUExecutionProvider"
    with pytest.raises(accel.BackendError, match="unknown onnxruntime provider"):
        OnnxRuntimeBackend("warp-drive")
    gpu = OnnxRuntimeBackend("cuda:1")  # constructed without a GPU: options only
    assert gpu.provider_options == {"device_id": "1"}
    gpu.set_provider_options(gpu_mem_limit=1 << 30)
    assert gpu.provider_options["gpu_mem_limit"] == str(1 << 30)


def test_strict_mode_disables_the_cpu_fallback_of_other_providers():
    gpu = OnnxRuntimeBackend("cuda")
    with accel.strict():
        assert gpu.session_options().get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    with pytest.raises(Exception):
        gpu.session_options().get_session_config_entry("session.disable_cpu_ep_fallback")


def test_eager_sessions_are_cached_per_dtype_and_rank(rt):
    rt._sessions.clear()
    for shape in ((2, 3), (5, 7), (1, 1)):
        a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(ops.add(accel.tensor(a, backend=rt), accel.tensor(a, backend=rt)).numpy(), a + a)
    assert len(rt._sessions) == 1
    ops.add(accel.tensor(np.ones(3), backend=rt), accel.tensor(np.ones(3), backend=rt))  # float64, rank 1
    assert len(rt._sessions) == 2


def test_bfloat16_and_float8_cross_the_numpy_bridge_exactly(rt):
    values = np.array([1.5, -3.3, 448.0, 1e-3, 0.0], np.float32)
    for np_type, dtype in ((ml_dtypes.bfloat16, accel.bfloat16), (ml_dtypes.float8_e4m3fn, accel.float8_e4m3fn)):
        x = accel.tensor(values.astype(np_type), backend=rt)
        assert x.dtype is dtype
        doubled = ops.add(x, x).numpy()
        assert doubled.dtype == np_type
        want = (values.astype(np_type).astype(np.float32) * 2).astype(np_type)
        np.testing.assert_array_equal(doubled.view(np.uint8), want.view(np.uint8))
        back = ops.cast(x, accel.float32).numpy()
        np.testing.assert_array_equal(back, values.astype(np_type).astype(np.float32))


def test_dtypes_ort_lacks_fall_back_counted_and_strict_refuses(rt):
    assert not rt.supports(ops.erf, accel.float64) and rt.supports(ops.erf, accel.float32)
    accel.reset_dispatch_stats()
    x = accel.tensor(np.array([0.5, -1.0]), backend=rt)
    with pytest.warns(accel.AccelWarning, match="erf on onnxruntime:cpu falls back"):
        y = ops.erf(x)
    np.testing.assert_allclose(y.numpy(), [0.5204998778130465, -0.8427007929497149], rtol=1e-15)
    assert accel.dispatch_stats()["onnxruntime:cpu"]["erf"]["fallback"] == 1
    with accel.strict():
        with pytest.raises(accel.UnsupportedError):
            ops.erf(x)


def test_attention_fused_keeps_accel_semantics(rt):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 4, 3, 8), (1, 2, 5, 8), (1, 2, 5, 8)))
    mask = np.ones((3, 5), bool)
    mask[1] = False  # a row with nothing to attend: zeros, not NaN
    for kwargs in ({"mask": mask}, {"causal": True}, {"mask": mask, "causal": True}):
        args = [accel.tensor(a, backend=rt) for a in (q, k, v)]
        m = kwargs.get("mask")
        got = ops.attention(*args, None if m is None else accel.tensor(m, backend=rt),
                            causal=kwargs.get("causal", False)).numpy()
        want = ops.attention.reference(q, k, v, m, causal=kwargs.get("causal", False))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert rt.supports(ops.attention, accel.float32)


def test_compiled_graph_is_one_checked_onnx_model(rt):
    import onnx

    def f(x, w):
        return ops.softmax(ops.matmul(x, w), -1), ops.rms_norm(x, None)

    fast = accel.compile(f)
    x = accel.tensor(np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32), backend=rt)
    w = accel.tensor(np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32), backend=rt)
    probs, normed = fast(x, w)
    entry = fast.signatures()[0]
    assert entry.runner == "backend"
    onnx.checker.check_model(entry.run.model, full_check=True)
    assert {"Softmax", "RMSNormalization", "MatMul"} <= {n.op_type for n in entry.run.model.graph.node}
    z = x.numpy().astype(np.float64) @ w.numpy()
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(probs.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-5)
    xs = x.numpy().astype(np.float64)
    np.testing.assert_allclose(normed.numpy(), xs / np.sqrt((xs ** 2).mean(-1, keepdims=True) + 1e-6), rtol=1e-5)


@pytest.mark.slow
def test_support_table_is_what_the_probe_finds():
    from accel.backends.onnxruntime.probe import probe_table
    from accel.backends.onnxruntime.support import CPU_OP_DTYPES

    assert probe_table(verbose=False) == CPU_OP_DTYPES
