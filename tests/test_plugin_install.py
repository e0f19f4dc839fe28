"""An out-of-tree vendor plugin, end to end: a throwaway distribution with an `accel.backends`
entry point is built in a temp dir, pip-installed into this venv, found by entry-point discovery
in a fresh interpreter, checked op by op against numpy float64, and uninstalled.

The plugin reports itself unavailable unless ACCEL_DEMO_VENDOR=1, so test runs that happen in
parallel while it is installed never pick it up as "every available backend".
"""
import json
import subprocess
import sys
import textwrap

import pytest

DIST = "accel-demo-vendor-plugin"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.0.1"
dependencies = ["accel-layer", "numpy"]

[project.entry-points."accel.backends"]
demovendor = "accel_demo_vendor:DemoVendorBackend"

[tool.setuptools]
py-modules = ["accel_demo_vendor"]
"""

# What docs/porting.md tells a vendor to write: native arrays, host transfer, a kernel table.
# It implements a handful of primitives; everything else decomposes or falls back, counted.
PLUGIN = '''
"""A vendor backend in one file: numpy stands in for the vendor's runtime."""
import os

import numpy as np

from accel import ops
from accel.core.backend import Backend, Probe
from accel.core.dtypes import bool_, float16, float32, from_numpy_dtype, int64


class DemoVendorBackend(Backend):
    name = "demovendor"
    priority = -5
    dtypes = (float32, float16, bool_, int64)  # bool and int64: every backend stores them
    kernels = {
        ops.add: np.add, ops.sub: np.subtract, ops.mul: np.multiply, ops.div: np.divide,
        ops.exp: np.exp, ops.neg: np.negative, ops.matmul: np.matmul,
        ops.sum: lambda x, *, axis=None, keepdims=False: np.asarray(np.sum(x, axis=axis, keepdims=keepdims)),
        ops.max: lambda x, *, axis=None, keepdims=False: np.asarray(np.max(x, axis=axis, keepdims=keepdims)),
        ops.reshape: lambda x, *, shape: np.reshape(x, shape),
        ops.permute: lambda x, *, axes: np.transpose(x, axes),
    }

    @classmethod
    def probe(cls):
        if os.environ.get("ACCEL_DEMO_VENDOR") != "1":
            return Probe(False, reason="demo plugin: set ACCEL_DEMO_VENDOR=1")
        return Probe(True, devices=("npu0",))

    @classmethod
    def default_device(cls):
        return "npu0"

    def from_numpy(self, array):
        return np.array(array, copy=True)

    def to_numpy(self, native):
        return np.asarray(native)

    def dtype_of(self, native):
        return from_numpy_dtype(native.dtype)
'''

CHECK = '''
import json, math
import numpy as np
import accel
from accel import ops

status = accel.available_backends()["demovendor"]
backend = accel.get_backend("demovendor")
rng = np.random.default_rng(0)
results = {}
cases = {
    "add": (ops.add, 2, (3, 5)), "mul": (ops.mul, 2, (3, 5)), "exp": (ops.exp, 1, (4, 4)),
    "softmax": (ops.softmax, 1, (3, 7)), "silu": (ops.silu, 1, (2, 9)),
    "rms_norm": (ops.rms_norm, 1, (3, 8)), "matmul": (ops.matmul, 2, (6, 6)),
}
for name, (op, arity, shape) in cases.items():
    host = [rng.standard_normal(shape).astype(np.float32) for _ in range(arity)]
    got = op(*[accel.from_numpy(h, backend=backend) for h in host]).numpy().astype(np.float64)
    want = op.reference(*[h.astype(np.float64) for h in host], **op.attrs)
    results[name] = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
stats = accel.dispatch_stats().get(backend.spec, {})
# the conformance suite's own cases and judge, when this checkout has them
suite = {"pass": 0, "fail": [], "unsupported": 0}
try:
    from accel.conformance import generators, judge, tolerances
except ImportError:
    generators = None
if generators is not None:
    for op in (ops.add, ops.mul, ops.exp, ops.matmul, ops.softmax):
        for case in generators.cases_for(op, accel.float32, quick=True):
            if case.layout != "contiguous":
                continue
            try:
                with accel.strict():
                    out = op(*[accel.from_numpy(x, backend=backend) for x in case.inputs], **case.attrs)
            except accel.UnsupportedError:
                suite["unsupported"] += 1
                continue
            with np.errstate(all="ignore"):
                ref = op.reference(*[x.astype(np.float64) for x in case.inputs], **case.attrs)
            verdict = judge.judge(out.numpy(), ref, out.dtype, tolerances.tolerance_for(op, "float32", "demovendor"))
            if verdict.passed:
                suite["pass"] += 1
            else:
                suite["fail"].append(case.id + ": " + verdict.reason)
print(json.dumps({"suite": suite, "available": status.available, "devices": list(status.devices), "spec": backend.spec,
                  "errors": results, "native": sorted(backend.capabilities().native_ops),
                  "stats": stats}))
'''


def _pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def installed_plugin(tmp_path):
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "accel_demo_vendor.py").write_text(textwrap.dedent(PLUGIN))
    done = _pip("install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        _pip("uninstall", "-y", "-q", DIST)


def _run(code, env_extra):
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_a_pip_installed_vendor_plugin_is_discovered_and_passes_op_checks(installed_plugin):
    hidden = _run("import accel; s = accel.available_backends()['demovendor']; print(s.available, s.reason)", {})
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.startswith("False") and "ACCEL_DEMO_VENDOR" in hidden.stdout

    done = _run(CHECK, {"ACCEL_DEMO_VENDOR": "1"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["available"] and found["devices"] == ["npu0"] and found["spec"] == "demovendor:npu0"
    assert "matmul" in found["native"] and "softmax" not in found["native"]
    # float32 against numpy float64: elementwise and accumulating ops within float32 tolerances
    for name, error in found["errors"].items():
        assert error < 1e-5, (name, error)
    # composites ran through their decompositions, counted; missing primitives fell back, counted
    assert found["stats"]["softmax"]["decomposed"] == 1
    assert found["stats"]["rms_norm"]["decomposed"] == 1
    assert found["stats"]["sqrt"]["fallback"] == 1
    suite = found["suite"]
    assert not suite["fail"], suite["fail"][:10]
    try:
        import accel.conformance.generators  # noqa: F401
    except ImportError:
        return
    assert suite["pass"] > 0, "the conformance suite's cases ran on the plugin"


def test_uninstalled_plugin_is_gone(tmp_path):
    done = _run("import accel; print('demovendor' in accel.available_backends())", {})
    assert done.returncode == 0 and done.stdout.strip() == "False"
