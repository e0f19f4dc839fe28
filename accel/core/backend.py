"""The backend contract: a class with a flat kernel table and a few methods.

A backend does no argument checking and no dtype promotion; the dispatcher does both once for
every backend. What a backend supports is the keys of its kernel table (tinygrad style) and,
per op, the dtypes it declares (ggml's `supports_op`): capabilities are data, never probed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from accel.core.dtypes import ALL_DTYPES, DType
from accel.core.op import Op


@dataclass(frozen=True)
class Probe:
    """Whether a backend can run here, why not, and which devices it can open."""

    available: bool
    reason: str = ""
    devices: tuple[str, ...] = ()
    install_hint: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a backend instance runs natively, read by `accel info` and the porting report."""

    backend: str
    device: str
    native_ops: frozenset[str]
    dtypes: frozenset[str]
    op_dtypes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    # The torch.distributed library this backend's tensors use (gloo, nccl, hccl ...); None:
    # no collective path (docs/distributed.md).
    collective_backend: str | None = None


class ScalarCache:
    """0-d native arrays for Python scalars, made once per (dtype, value) and reused.

    `x * 0.5` would otherwise build a device array (a host-to-device copy on an accelerator;
    ~60 µs for jax.device_put) on every call. Keyed with the sign so that -0.0 and 0.0 stay
    apart. Only for backends whose ops never write into an input scalar.
    """

    def __init__(self, make: Callable[[Any, DType], Any], limit: int = 4096):
        self.make = make
        self.limit = limit
        self.found: dict = {}

    def __call__(self, value, dtype: DType):
        key = (dtype, value, type(value), str(value) if value == 0 else None)
        native = self.found.get(key)
        if native is None:
            if len(self.found) >= self.limit:
                self.found.clear()
            native = self.found[key] = self.make(value, dtype)
        return native


class Backend:
    """Base class of every backend plugin. Subclasses fill the class attributes below."""

    name: ClassVar[str] = ""
    is_reference: ClassVar[bool] = False
    # Auto-detect order: the highest available priority wins; the reference backend is lowest.
    priority: ClassVar[int] = 0
    # A backend with one host device is named without it ("numpy" rather than "numpy:cpu").
    cpu_only: ClassVar[bool] = False
    kernels: ClassVar[dict[Op, Callable]] = {}
    # Optional: kernels that update their first input in place (x, *rest, **attrs) -> None.
    inplace_kernels: ClassVar[dict[Op, Callable]] = {}
    dtypes: ClassVar[tuple[DType, ...]] = ALL_DTYPES
    # Optional: per-op dtype restriction; an op not listed runs every dtype in `dtypes`.
    op_dtypes: ClassVar[dict[Op, tuple[DType, ...]]] = {}

    def __init__(self, device: str | None = None):
        self.device = device or self.default_device()
        self._resolved: dict[Op, Callable] = {}

    # --- identity --------------------------------------------------------------------------
    @classmethod
    def probe(cls) -> Probe:
        return Probe(True, devices=("cpu",))

    @classmethod
    def default_device(cls) -> str:
        return "cpu"

    @property
    def spec(self) -> str:
        return self.name if self.cpu_only else f"{self.name}:{self.device}"

    def __repr__(self) -> str:
        return f"<accel backend {self.spec}>"

    # --- host transfer and native facts (every backend implements these) -------------------
    def from_numpy(self, array: np.ndarray):
        raise NotImplementedError

    def to_numpy(self, native) -> np.ndarray:
        raise NotImplementedError

    def dtype_of(self, native) -> DType:
        raise NotImplementedError

    def scalar(self, value, dtype: DType):
        """A native 0-d array holding `value` in `dtype` (used for Python scalars in ops)."""
        return self.from_numpy(np.asarray(value, dtype=dtype.numpy))

    def synchronize(self) -> None:
        """Wait for queued device work (no-op for synchronous backends)."""

    def device_facts(self) -> dict[str, Any]:
        """Device count, name, memory, collective backend ... (DeepSpeed accelerator style)."""
        return {}

    def inference(self):
        """A context for inference-only work (generation): the library may skip gradient
        bookkeeping inside it (torch.inference_mode). Default: nothing to switch."""
        return contextlib.nullcontext()

    # Optional: the torch.distributed library (gloo, nccl, hccl, cncl, mccl, xccl ...) that runs
    # collectives on this backend's arrays; None means the backend has no collective path. Host
    # memory backends say "gloo"; a device backend may set it per instance (by device type).
    collective_backend: str | None = None

    def torch_view(self, native):
        """Optional: a torch.Tensor sharing memory with `native` that torch.distributed can hand
        to `collective_backend` directly (torch device backends); None (default): collectives go
        through `to_numpy`/`from_numpy` on gloo, the transfers counted as usual."""
        return None

    def runs_on_host(self) -> bool:
        """True when the arrays live in host memory and the host CPU computes them (numpy,
        torch:cpu, a simulator). Benchmarks share one host roofline among such backends; an
        accelerator backend overrides this to say False and gets its own."""
        return True

    # --- capabilities ----------------------------------------------------------------------
    def supports(self, op: Op, dtype: DType | None = None) -> bool:
        if op not in self.kernels:
            return False
        if dtype is None:
            return True
        return dtype in self.op_dtypes.get(op, self.dtypes)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            backend=self.name,
            device=self.device,
            native_ops=frozenset(op.name for op in self.kernels),
            dtypes=frozenset(d.name for d in self.dtypes),
            op_dtypes={op.name: frozenset(d.name for d in ds) for op, ds in self.op_dtypes.items()},
            facts=self.device_facts(),
            collective_backend=self.collective_backend,
        )

    # --- graph compilation (issue: accel.compile); None means "use the interpreter" --------
    def compile(self, graph):
        return None
