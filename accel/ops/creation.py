"""Creation ops: full and arange are primitives; random numbers come from a counter-based
generator (numpy's Philox) keyed by the seed and moved to the device, so every backend starts
from the same weights and draws the same samples (reproducible across backends)."""
from __future__ import annotations

import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import as_dtype
from accel.core.errors import OpError
from accel.core.op import COMPOSITE, PRIMITIVE, Op
from accel.ops._rules import prepare_creation, spec
from accel.core.tensor import Tensor


def _full_infer(*, shape, value, dtype, backend=None):
    return spec(shape, as_dtype(dtype))


def _full_reference(*, shape, value, dtype, backend=None):
    return np.full(shape, value, dtype=np.float64 if as_dtype(dtype).is_floating else as_dtype(dtype).numpy)


full = Op("full", kind=PRIMITIVE, inputs=(),
          attrs={"shape": (), "value": 0.0, "dtype": dt.float32, "backend": None},
          infer=_full_infer, reference=_full_reference, prepare=prepare_creation,
          dtypes=dt.ALL_DTYPES, exact=True, cases={"family": "full"},
          doc="A tensor of `shape` filled with `value` in `dtype` on `backend` (default: current).")


def _arange_count(start, stop, step) -> int:
    if step == 0:
        raise OpError("arange step must not be 0", hint="use a positive or negative step")
    return max(0, int(np.ceil((stop - start) / step)))


def _prepare_arange(args, attrs):
    attrs = dict(attrs)
    if attrs["stop"] is None:
        attrs["start"], attrs["stop"] = 0, attrs["start"]
    attrs["dtype"] = as_dtype(attrs["dtype"])
    _arange_count(attrs["start"], attrs["stop"], attrs["step"])
    return args, attrs


def _arange_infer(*, start, stop, step, dtype, backend=None):
    return spec((_arange_count(start, stop, step),), as_dtype(dtype))


def _arange_reference(*, start, stop, step, dtype, backend=None):
    return np.arange(start, stop, step, dtype=np.float64 if as_dtype(dtype).is_floating else np.int64)


arange = Op("arange", kind=PRIMITIVE, inputs=(),
            attrs={"start": 0, "stop": None, "step": 1, "dtype": dt.int64, "backend": None},
            infer=_arange_infer, reference=_arange_reference, prepare=_prepare_arange,
            dtypes=dt.FLOAT_DTYPES[:2] + dt.INT_DTYPES, exact=True, onnx="Range",
            cases={"family": "arange"},
            doc="Evenly spaced values in [start, stop) by step; `arange(n)` is 0..n-1.")


def _host_random(kind: str, shape, seed, low, high):
    if seed is None or not isinstance(seed, (int, np.integer)):
        raise OpError(f"random_{kind} needs an explicit integer seed, got {seed!r}",
                      hint="pass seed=<int>; the same seed gives the same numbers on every backend")
    gen = np.random.Generator(np.random.Philox(int(seed)))
    if kind == "normal":
        return gen.standard_normal(shape) * (high - low) + low  # low=mean, high-low=std
    return gen.uniform(low, high, shape)


def _random_infer(*, shape, seed, dtype, backend=None, **_):
    return spec(shape, as_dtype(dtype))


def _random_decomposition(kind):
    def run(*, shape, seed, dtype, backend=None, low=0.0, high=1.0, mean=0.0, std=1.0):
        from accel.core.dispatch import require_stored
        from accel.core.registry import get_backend

        b = get_backend(backend)
        dtype = as_dtype(dtype)
        if not dtype.is_floating:
            raise OpError(f"random_{kind} makes floating-point tensors, not {dtype.name}",
                          hint="ask for float32 (or another float dtype) and cast")
        require_stored(b, random_normal if kind == "normal" else random_uniform, dtype, ())
        if kind == "normal":
            values = _host_random("normal", shape, seed, mean, mean + std)
        else:
            values = _host_random("uniform", shape, seed, low, high)
        return Tensor(b.from_numpy(values.astype(dtype.numpy)), b)
    return run


def _random_reference(kind):
    def run(*, shape, seed, dtype, backend=None, low=0.0, high=1.0, mean=0.0, std=1.0):
        if kind == "normal":
            return _host_random("normal", shape, seed, mean, mean + std)
        return _host_random("uniform", shape, seed, low, high)
    return run


random_uniform = Op(
    "random_uniform", kind=COMPOSITE, inputs=(),
    attrs={"shape": (), "seed": None, "low": 0.0, "high": 1.0, "dtype": dt.float32, "backend": None},
    infer=_random_infer, reference=_random_reference("uniform"), prepare=prepare_creation,
    decompose=_random_decomposition("uniform"), dtypes=dt.FLOAT_DTYPES, exact=True,
    cases={"family": "random"},
    doc="Uniform samples in [low, high) from Philox(seed), identical on every backend.")
random_normal = Op(
    "random_normal", kind=COMPOSITE, inputs=(),
    attrs={"shape": (), "seed": None, "mean": 0.0, "std": 1.0, "dtype": dt.float32, "backend": None},
    infer=_random_infer, reference=_random_reference("normal"), prepare=prepare_creation,
    decompose=_random_decomposition("normal"), dtypes=dt.FLOAT_DTYPES, exact=True,
    cases={"family": "random"},
    doc="Normal samples N(mean, std²) from Philox(seed), identical on every backend.")


# --- conveniences over `full` (not ops of their own) ----------------------------------------
def zeros(shape, dtype=dt.float32, backend=None) -> Tensor:
    return full(shape, 0, dtype, backend)


def ones(shape, dtype=dt.float32, backend=None) -> Tensor:
    return full(shape, 1, dtype, backend)


def zeros_like(x: Tensor, dtype=None) -> Tensor:
    return full(x.shape, 0, dtype or x.dtype, x.backend)


def ones_like(x: Tensor, dtype=None) -> Tensor:
    return full(x.shape, 1, dtype or x.dtype, x.backend)


def full_like(x: Tensor, value, dtype=None) -> Tensor:
    return full(x.shape, value, dtype or x.dtype, x.backend)


