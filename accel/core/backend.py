"""The backend contract: a class with a flat kernel table and a few methods.

A backend does no argument checking and no dtype promotion; the dispatcher does both once for
every backend. What a backend supports is the keys of its kernel table (tinygrad style) and,
per op, the dtypes it declares (ggml's `supports_op`): capabilities are data, never probed.

Everything a plugin can say is declared on `Backend` below: the three abstract methods every
backend implements (checked when the plugin registers, `accel.core.registry`), the class
attributes it fills, and the optional hooks with their defaults. docs/porting.md walks through it.
"""
from __future__ import annotations

import abc
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


def store(backend: "Backend", array: np.ndarray):
    """`backend.from_numpy(array)` for a dtype the backend declares; UnsupportedError otherwise.
    The conformance suite places its inputs through it (an undeclared dtype is "unsupported")."""
    from accel.core.dtypes import from_numpy_dtype
    from accel.core.errors import UnsupportedError

    dtype = from_numpy_dtype(array.dtype)
    if dtype not in backend.dtypes:
        raise UnsupportedError(
            f"{backend.spec} does not store {dtype.name} (it stores {', '.join(d.name for d in backend.dtypes)})",
            hint=f"cast on the host first, e.g. accel.tensor(data, dtype=accel.{backend.dtypes[0].name}), "
                 f"or use another backend")
    return backend.from_numpy(array)


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


class Backend(abc.ABC):
    """Base class of every backend plugin. Subclasses fill the class attributes below and
    implement the three abstract methods; every other method is an optional hook."""

    name: ClassVar[str] = ""
    # The CPU reference (numpy): host fallback target and conformance reference. One per install.
    is_reference: ClassVar[bool] = False
    # Auto-detect order: the highest available priority wins; the reference backend is lowest.
    priority: ClassVar[int] = 0
    # A backend with one host device is named without it ("numpy" rather than "numpy:cpu").
    cpu_only: ClassVar[bool] = False
    # op -> kernel. Calling convention (docs/porting.md): tensor inputs as native arrays, in
    # declaration order (a variadic input as a list), attributes as keywords (dtypes as DType);
    # creation kernels (ops without tensor inputs) also get `device=` (this instance's device).
    kernels: ClassVar[dict[Op, Callable]] = {}
    # Kernels that update their first input in place (x, *rest, **attrs) -> None.
    inplace_kernels: ClassVar[dict[Op, Callable]] = {}
    # Every dtype the backend stores: `from_numpy` gets, and kernels receive and return, only
    # these. Must include bool and int64 (masks, comparisons, indices, token ids).
    dtypes: ClassVar[tuple[DType, ...]] = ALL_DTYPES
    # Per op, the dtypes its kernel computes in (judged on every data input; index inputs only
    # need to be stored). An op not listed computes every dtype in `dtypes`. For an op without
    # tensor inputs (full, arange) this is the dtype it creates.
    op_dtypes: ClassVar[dict[Op, tuple[DType, ...]]] = {}
    # Per op, the dtypes its kernel produces where they differ from its inputs' (cast's target,
    # creation's dtype). An op not listed produces any dtype in `dtypes` (for ops without tensor
    # inputs: any dtype in its `op_dtypes`).
    op_outputs: ClassVar[dict[Op, tuple[DType, ...]]] = {}
    # Absolute path of the backend's reviewed known-failures TOML (accel/conformance/expectations.py
    # has the format); `accel conformance` and `pytest -p accel.testing` read it. None: none.
    known_failures: ClassVar[str | None] = None

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
    @abc.abstractmethod
    def from_numpy(self, array: np.ndarray):
        """A native array holding a copy (or a view, where safe) of `array`, same shape (0-d
        stays 0-d) and dtype; `array.dtype` is always one of `dtypes` (bfloat16/float8 come as
        ml_dtypes arrays)."""

    @abc.abstractmethod
    def to_numpy(self, native) -> np.ndarray:
        """A host numpy (or ml_dtypes) array with the native array's shape, dtype and values."""

    @abc.abstractmethod
    def dtype_of(self, native) -> DType:
        """The accel DType of a native array (called often: keep it a lookup)."""

    def scalar(self, value, dtype: DType):
        """A native 0-d array holding `value` in `dtype` (used for Python scalars in ops)."""
        return self.from_numpy(np.asarray(value, dtype=dtype.numpy))

    def synchronize(self) -> None:
        """Wait for queued device work (no-op for synchronous backends)."""

    def block_until_ready(self, native) -> None:
        """Wait until `native` is computed (asynchronous backends, e.g. jax). Default: synchronize."""
        self.synchronize()

    def from_dlpack(self, obj):
        """A native array sharing `obj`'s memory (anything with `__dlpack__`), or None: no DLPack
        import of its own, so `accel.from_dlpack` copies through host numpy."""
        return None

    def build_entry(self, op: Op) -> Callable | None:
        """The dispatcher entry `(args, attrs) -> Tensor` for `op` when the backend applies its
        own dtype policy (npusim); None (default): the dispatcher's rules decide."""
        return None

    def configure(self, **options) -> "Backend":
        """Set backend options (`accel port-report --set KEY=VALUE`). Default: takes none."""
        from accel.core.errors import BackendError

        if options:
            raise BackendError(f"backend {self.spec} takes no options (got {', '.join(sorted(options))})",
                               hint="drop the options; only backends that define configure() take any")
        return self

    def counters(self) -> dict[str, Any]:
        """Device counters (kernel launches, bytes moved, simulated time ...). Default: none."""
        return {}

    def reset_counters(self) -> None:
        """Zero `counters()` so a measurement covers one run. Default: nothing to reset."""

    @property
    def simulated_time(self) -> float | None:
        """Seconds on a simulated clock (a simulator), or None (default): time is wall time."""
        return None

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
        """Whether `op` has a kernel here computing `dtype` (None: in any dtype)."""
        if op not in self.kernels:
            return False
        if dtype is None:
            return True
        return dtype in self.op_dtypes.get(op, self.dtypes)

    def produces(self, op: Op) -> frozenset[DType]:
        """The dtypes `op`'s kernel may return here (see `op_outputs`)."""
        declared = self.op_outputs.get(op)
        if declared is not None:
            return frozenset(declared)
        return frozenset(self.op_dtypes.get(op, self.dtypes) if not op.inputs else self.dtypes)

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

    # --- graph compilation (accel.compile) --------------------------------------------------
    # The graph compilers `compile` can use, when it has several (torch: "python", "inductor").
    graph_compilers: ClassVar[tuple[str, ...]] = ()
    graph_compiler: str | None = None  # the one chosen by set_graph_compiler; None: the default

    def set_graph_compiler(self, mode: str | None = None) -> None:
        """Choose one of `graph_compilers` for graphs compiled from now on (None: the default)."""
        from accel.core.errors import BackendError

        if mode is not None and mode not in self.graph_compilers:
            raise BackendError(f"backend {self.spec} has no graph compiler {mode!r}",
                               hint=f"choose one of: {', '.join(self.graph_compilers) or 'none (it has one way to compile)'}")
        self.graph_compiler = mode

    def compile(self, graph):
        """A callable running the whole traced graph natively, or None (default): the graph
        interpreter runs it op by op through this backend's kernels (docs/compile.md)."""
        return None
