"""The JAX backend: `jax`, `jax:cpu`, `jax:gpu`, `jax:tpu` as jax reports devices.

Eager ops call jax.numpy / lax kernels (`jax_kernels.py`, each one `jax.jit`ted so that a call
takes jax's C++ dispatch path) on arrays committed to the chosen device; `compile(graph)` returns
one `jax.jit` of a function that walks the graph with the same kernels (static shapes, so XLA
sees one fused program), donating the buffers of inputs the graph updates in place (the KV cache)
so XLA can write them without a copy. Importing the backend enables jax's x64 mode: accel has
float64 and int64, which jax only provides with it.
"""
from __future__ import annotations

import os

import numpy as np

from accel.core.backend import Backend, Probe, ScalarCache
from accel.core.dtypes import ALL_DTYPES, from_numpy_dtype
from accel.core.errors import BackendError

try:
    import jax

    from accel.backends.jax import kernels as jax_kernels
    _IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - reported by probe(), never raised at import
    jax = None
    _IMPORT_ERROR = exc

_DTYPES = {d.numpy: d for d in ALL_DTYPES}
_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def _devices(platform: str) -> list:
    try:
        return list(jax.devices(platform))
    except RuntimeError:  # jax raises when no device of that platform exists
        return []


class JaxBackend(Backend):
    name = "jax"
    # Auto-detect rank (Backend.priority), set by probe() from the devices found: a GPU/TPU
    # outranks every CPU backend; on a CPU jax ranks after torch:cpu, numpy and npusim, since
    # its eager calls (one jit dispatch per op) are the slowest here (docs/benchmarks.md).
    ACCELERATOR_PRIORITY, CPU_PRIORITY = 90, -20
    priority = CPU_PRIORITY
    kernels = jax_kernels.EAGER_KERNELS if jax is not None else {}

    def __init__(self, device: str | None = None):
        super().__init__(device)
        platform, _, index = self.device.partition(":")
        found = _devices(_PLATFORMS.get(platform, platform))
        i = int(index or 0)
        if i >= len(found):
            raise BackendError(f"jax has no {platform} device {i}; it reports {len(found)}",
                               hint="see `accel info --backend jax`")
        self.jax_device = found[i]
        # Host arrays join gloo through a host view; jax's own device collectives are not
        # torch.distributed's, so an accelerator device has no collective path here.
        self.collective_backend = "gloo" if self.jax_device.platform == "cpu" else None
        self.scalar = ScalarCache(self._make_scalar)  # jax arrays are immutable: safe to share
        precision = os.environ.get("ACCEL_JAX_MATMUL_PRECISION")
        if precision:
            jax_kernels.set_matmul_precision(precision)

    @classmethod
    def probe(cls) -> Probe:
        if jax is None:
            return Probe(False, reason=f"jax failed to import: {_IMPORT_ERROR!r}",
                         install_hint="pip install 'accel-layer[jax]'")
        devices = []
        for platform in ("gpu", "tpu", "cpu"):
            found = _devices(platform)
            devices += [platform] + [f"{platform}:{i}" for i in range(len(found))] if found else []
        cls.priority = cls.CPU_PRIORITY if devices[:1] == ["cpu"] else cls.ACCELERATOR_PRIORITY
        return Probe(True, devices=tuple(devices))

    @classmethod
    def default_device(cls) -> str:
        if jax is None:
            return "cpu"
        return next((p for p in ("gpu", "tpu") if _devices(p)), "cpu")

    @staticmethod
    def set_matmul_precision(name: str) -> None:
        jax_kernels.set_matmul_precision(name)

    # --- host transfer ---------------------------------------------------------------------
    def from_numpy(self, array):
        return jax.device_put(np.asarray(array), self.jax_device)

    def to_numpy(self, native):
        return np.asarray(native)

    def dtype_of(self, native):
        # Read on most op calls (promotion, guards): a jax array's dtype is a numpy dtype, so one
        # dict lookup; np.dtype() and the checked lookup only for anything else.
        found = _DTYPES.get(native.dtype)
        return found if found is not None else from_numpy_dtype(np.dtype(native.dtype))

    def _make_scalar(self, value, dtype):
        return jax.device_put(np.asarray(value, dtype=dtype.numpy), self.jax_device)

    def synchronize(self) -> None:
        jax.effects_barrier()

    def block_until_ready(self, native) -> None:
        native.block_until_ready()  # jax dispatches asynchronously

    def runs_on_host(self) -> bool:
        return self.jax_device.platform == "cpu"

    def device_facts(self):
        d = self.jax_device
        facts = {"device_count": len(_devices(d.platform)), "device_name": d.device_kind,
                 "platform": d.platform, "jax": jax.__version__,
                 "matmul_precision": str(jax_kernels.settings.precision).split(".")[-1].lower()}
        try:
            stats = d.memory_stats() or {}
            if "bytes_limit" in stats:
                facts["memory_bytes"] = stats["bytes_limit"]
        except Exception:  # memory_stats is not implemented on every platform
            pass
        facts["collective_backend"] = self.collective_backend
        return facts

    # --- graphs ----------------------------------------------------------------------------
    def compile(self, graph):
        from accel.backends.jax.graph import jit_graph

        return jit_graph(self, graph)
