"""The torch backend: `torch:cpu`, `torch:cuda[:i]`, and `torch:<type>[:i]` for the device types
vendor extensions register through PyTorch's PrivateUse1 mechanism (Ascend `npu` via torch_npu,
Cambricon `mlu` via torch_mlu, Moore Threads `musa` via torch_musa) or that torch ships (`xpu`).

An extension is imported only when it is installed (`importlib.util.find_spec` first) and never
required; `probe()` lists the devices found and says why the other types are absent. The kernel
table is `torch_kernels.py` (its kernels in torch_dtypes/_primitives/_fused/_float8.py); this file
holds device discovery, host transfer and device facts.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Any

import numpy as np

from accel.core import host_info
from accel.core.backend import Backend, Probe, ScalarCache
from accel.core.errors import BackendError, DTypeError

try:
    import torch

    from accel.backends.torch import float8 as F8
    from accel.backends.torch import graph as G
    from accel.backends.torch import kernels as K
    _IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # pragma: no cover - reported by probe(), never raised at import
    torch = None
    K = None
    _IMPORT_ERROR = exc

# device type -> (extension module that registers it, or None when torch ships it; collective)
DEVICE_TYPES: dict[str, tuple[str | None, str]] = {
    "cuda": (None, "nccl"),
    "npu": ("torch_npu", "hccl"),
    "mlu": ("torch_mlu", "cncl"),
    "musa": ("torch_musa", "mccl"),
    "xpu": (None, "xccl"),
}


@functools.cache
def discover() -> tuple[dict[str, int], dict[str, str]]:
    """({device type: count} of what is usable here, {device type: why it is absent})."""
    found: dict[str, int] = {}
    absent: dict[str, str] = {}
    for kind, (extension, _) in DEVICE_TYPES.items():
        if extension is not None:
            if importlib.util.find_spec(extension) is None:
                absent[kind] = f"{extension} not installed"
                continue
            try:
                importlib.import_module(extension)  # registers torch.<kind> via PrivateUse1
            except Exception as exc:
                absent[kind] = f"{extension} failed to import: {exc!r}"
                continue
        module = getattr(torch, kind, None)
        if module is None or not hasattr(module, "is_available"):
            absent[kind] = f"this torch build has no torch.{kind}"
            continue
        try:
            count = module.device_count() if module.is_available() else 0
        except Exception as exc:  # a broken driver must not break discovery
            absent[kind] = f"torch.{kind} failed: {exc!r}"
            continue
        if count:
            found[kind] = count
        elif kind == "cuda" and torch.version.cuda is None and torch.version.hip is None:
            absent[kind] = f"torch {torch.__version__} is a CPU-only build"
        else:
            absent[kind] = f"no {kind} device visible"
    return found, absent


def _priority() -> int:
    if torch is None:
        return 0
    try:
        found, _ = discover()
    except Exception:
        return 10
    # An accelerator outranks every CPU backend; torch's CPU ranks above the numpy reference.
    return 100 if found else 10


class TorchBackend(Backend):
    name = "torch"
    priority = _priority()
    kernels = K.kernels_for(torch.device("cpu")) if torch is not None else {}
    inplace_kernels = K.INPLACE_KERNELS if torch is not None else {}

    _by_device: dict[str, "TorchBackend"] = {}

    def __new__(cls, device: str | None = None):
        # "torch:cuda" and "torch:cuda:0" must be one backend: tensors compare backends by identity.
        normalized = cls._normalize(device or cls.default_device())
        existing = cls._by_device.get(normalized)
        if existing is not None:
            return existing
        inst = super().__new__(cls)
        cls._by_device[normalized] = inst
        return inst

    def __init__(self, device: str | None = None):
        if getattr(self, "_ready", False):
            return
        if torch is None:
            raise BackendError(f"torch failed to import: {_IMPORT_ERROR!r}",
                               hint="pip install 'accel-layer[torch]'")
        super().__init__(self._normalize(device or self.default_device()))
        self.torch_device = torch.device(self.device)
        self.device_type = self.torch_device.type
        self.collective_backend = DEVICE_TYPES.get(self.device_type, (None, "gloo"))[1]
        self._pin_precision()
        self._set_scaled_mm(os.environ.get(F8.SCALED_MM_ENV, "") or "auto", source=F8.SCALED_MM_ENV)
        # Python scalars in `x * 0.5` as cached 0-d tensors: no allocation (nor host-to-device
        # copy) per call. Safe to share: no kernel writes into an input scalar.
        self.scalar = ScalarCache(self._make_scalar)
        self._ready = True

    @staticmethod
    def _normalize(device: str) -> str:
        kind, _, index = device.partition(":")
        if kind == "cpu":
            return "cpu"
        return f"{kind}:{int(index or 0)}"

    # --- discovery -------------------------------------------------------------------------
    @classmethod
    def probe(cls) -> Probe:
        if torch is None:
            return Probe(False, reason=f"torch failed to import: {_IMPORT_ERROR!r}",
                         install_hint="pip install 'accel-layer[torch]'")
        found, absent = discover()
        devices: list[str] = []
        for kind, count in found.items():
            devices += [kind] + [f"{kind}:{i}" for i in range(count)]
        devices.append("cpu")
        reason = "; ".join(f"{k}: {why}" for k, why in absent.items())
        return Probe(True, reason=reason, devices=tuple(devices))

    @classmethod
    def default_device(cls) -> str:
        if torch is None:
            return "cpu"
        found, _ = discover()
        return f"{next(iter(found))}:0" if found else "cpu"

    def inference(self):
        # 4-6 % of an eager decode step is autograd and view bookkeeping (see docs/torch.md)
        return torch.inference_mode()

    def runs_on_host(self) -> bool:
        return self.device_type == "cpu"

    def _device_module(self):
        return None if self.device_type == "cpu" else getattr(torch, self.device_type, None)

    def _pin_precision(self) -> None:
        """docs/conformance.md: float32 matmuls in full precision, fp16/bf16 GEMMs reduce in float32.

        These are process-wide torch switches; ACCEL_TORCH_ALLOW_TF32=1 leaves torch's own
        defaults alone (faster on Ampere+, judged by the reduced-precision thresholds)."""
        if os.environ.get("ACCEL_TORCH_ALLOW_TF32", "") not in ("", "0"):
            return
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False

    def _has_float8_gemm(self) -> bool:
        if self.device_type != "cuda" or torch.version.hip is not None:
            return False
        major, minor = torch.cuda.get_device_capability(self.torch_device)
        return (major, minor) >= (8, 9) and hasattr(torch, "_scaled_mm")

    # --- options (accel port-report --set KEY=VALUE) ----------------------------------------
    def configure(self, *, scaled_mm: str | None = None) -> "TorchBackend":
        """scaled_mm: which kernel runs ops.scaled_matmul on this device from now on (graphs
        already compiled keep theirs). "auto" (default, or ACCEL_TORCH_SCALED_MM): torch._scaled_mm
        on CUDA of compute capability 8.9+, the exact float32 emulation elsewhere; "native":
        torch._scaled_mm on any device that implements it (the CPU does: the call convention
        runs there, not FP8 hardware); "emulate": the emulation everywhere. Returns self."""
        if scaled_mm is not None:
            self._set_scaled_mm(scaled_mm, source="configure(scaled_mm=...)")
        return self

    def _set_scaled_mm(self, mode: str, *, source: str) -> None:
        if mode not in F8.SCALED_MM_MODES:
            raise BackendError(f"{self.spec}: unknown scaled_mm mode {mode!r} (from {source})",
                               hint="use auto (torch._scaled_mm on CUDA >= 8.9), native (on any device) "
                                    "or emulate")
        native = self._has_float8_gemm() if mode == "auto" else mode == "native"
        if native and not hasattr(torch, "_scaled_mm"):
            raise BackendError(f"{self.spec}: scaled_mm={mode} needs torch._scaled_mm, which torch "
                               f"{torch.__version__} does not have", hint="use scaled_mm=emulate or a newer torch")
        cutlass = self.device_type == "cuda" and torch.version.hip is None and F8.cutlass_rowwise(
            torch.cuda.get_device_capability(self.torch_device), torch.version.cuda)
        self.scaled_mm_mode = mode
        self.native_scaled_mm = native
        self.scaled_mm = F8.ScaledMM(self.spec, rowwise_needs_e4m3_b=cutlass) if native else None
        self.kernels = K.kernels_for(self.torch_device, scaled_matmul=self.scaled_mm or F8.scaled_matmul_emulated)
        self._resolved.clear()  # the dispatcher's cached entries hold the old kernel

    def counters(self) -> dict[str, Any]:
        """torch._scaled_mm calls and the calls its path handed to the emulation, when this
        device's scaled_mm mode chose torch._scaled_mm (see configure); else nothing to count."""
        return self.scaled_mm.counters() if self.scaled_mm is not None else {}

    def reset_counters(self) -> None:
        if self.scaled_mm is not None:
            self.scaled_mm.native_calls = self.scaled_mm.emulated_calls = 0

    # --- host transfer ---------------------------------------------------------------------
    def from_numpy(self, array):
        a = np.asarray(array)
        if a.dtype not in _FROM_NUMPY:
            raise DTypeError(f"numpy dtype {a.dtype} has no accel counterpart",
                             hint="cast the array to float32, bfloat16, int64, bool, ...")
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = np.array(a)  # torch.from_numpy shares memory only with writable, positive strides
        view, torch_dtype = _FROM_NUMPY[a.dtype]
        t = torch.from_numpy(a.view(view) if view is not None else a)
        if view is not None:
            t = t.view(torch_dtype)
        if self.device_type != "cpu":
            t = t.to(self.torch_device)
        return t

    def to_numpy(self, native):
        t = native.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        viewed = _TO_NUMPY.get(t.dtype)
        if viewed is not None:
            return t.view(viewed[0]).numpy().view(viewed[1])
        return t.numpy()

    def dtype_of(self, native):
        found = K.ACCEL_DTYPES.get(native.dtype)
        if found is None:
            raise DTypeError(f"torch dtype {native.dtype} has no accel counterpart",
                             hint="convert the torch tensor to float32, bfloat16, int64, bool, ...")
        return found

    def _make_scalar(self, value, dtype):
        return torch.tensor(K.exact_value(value, dtype), dtype=K.TORCH_DTYPES[dtype], device=self.torch_device)

    def from_dlpack(self, obj):
        """Zero-copy import of a DLPack-capable array (numpy, jax, cupy, torch) onto this device.

        ml_dtypes arrays (bfloat16, float8) export as same-width integers and are viewed back;
        an array on another device is copied to this one."""
        if isinstance(obj, np.ndarray) and obj.dtype in _FROM_NUMPY and _FROM_NUMPY[obj.dtype][0] is not None:
            view, torch_dtype = _FROM_NUMPY[obj.dtype]
            t = torch.from_dlpack(obj.view(view)).view(torch_dtype)
        else:
            t = torch.from_dlpack(obj)
        if t.device != self.torch_device:
            t = t.to(self.torch_device)
        self.dtype_of(t)
        return t

    # --- graphs (backends/torch/graph.py) ---------------------------------------------------
    graph_compilers = G.MODES if torch is not None else ()  # what set_graph_compiler takes
    graph_compiler: str | None = None   # None: ACCEL_TORCH_COMPILE, else "python"
    cuda_graphs: bool = True            # replay repeated graphs as CUDA graphs (CUDA only)

    def set_graph_compiler(self, mode: str | None = None, *, cuda_graphs: bool | None = None) -> None:
        """How `accel.compile` runs graphs on this device from now on: "python" (generated torch
        code) or "inductor" (that code through torch.compile); None restores the default
        (ACCEL_TORCH_COMPILE, else "python"). Graphs already compiled keep their mode."""
        self.graph_compiler = None if mode is None else G.check_mode(mode)
        if cuda_graphs is not None:
            self.cuda_graphs = cuda_graphs

    def compile(self, graph):
        mode = self.graph_compiler or G.mode_from_env()
        cuda_graphs = self.cuda_graphs and os.environ.get("ACCEL_TORCH_CUDA_GRAPHS", "1") != "0"
        return G.compile_graph(self, graph, mode, cuda_graphs)

    # --- device facts (DeepSpeed accelerator style) -----------------------------------------
    def torch_view(self, native):
        return native  # already a torch.Tensor: torch.distributed takes it as it is

    def synchronize(self) -> None:
        module = self._device_module()
        if module is not None:
            module.synchronize(self.torch_device)

    def manual_seed(self, seed: int) -> None:
        """Seed torch's own generators (CPU and this device). accel's random ops use Philox on
        the host and do not depend on it; this is for torch code run next to accel."""
        torch.manual_seed(seed)
        module = self._device_module()
        if module is not None and hasattr(module, "manual_seed_all"):
            module.manual_seed_all(seed)

    def device_facts(self) -> dict[str, Any]:
        found, absent = discover()
        facts: dict[str, Any] = {"torch": torch.__version__}
        module = self._device_module()
        if module is None:
            facts.update(_cpu_facts())
        else:
            facts.update(_accelerator_facts(module, self.torch_device))
        facts["collective_backend"] = self.collective_backend
        facts["float32_matmul"] = "tf32 allowed" if torch.backends.cuda.matmul.allow_tf32 else "ieee float32"
        facts["float16_bfloat16"] = "native (float32 internal math / accumulation)"
        facts["float8"] = "storage, casts and data movement native; arithmetic emulated through float32"
        facts["float8_emulated_ops"] = ", ".join(K.EMULATED_FLOAT8)
        facts["scaled_matmul"] = (
            ("torch._scaled_mm where its rules allow" + (" (float8 tensor cores)" if self._has_float8_gemm() else
                                                         " (opted in: not CUDA of compute capability 8.9+)"))
            if self.native_scaled_mm else "emulated: float32 GEMM of exact float8 products, then scales"
        ) + f"; scaled_mm={self.scaled_mm_mode}"
        facts["device_types_found"] = ", ".join(f"{k} x{n}" for k, n in found.items()) or "none (cpu only)"
        if absent:
            facts["device_types_absent"] = "; ".join(f"{k}: {why}" for k, why in absent.items())
        return facts


def _cpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"device_count": 1, "device_name": host_info.cpu_name(),
                             "threads": torch.get_num_threads(), "memory_total_bytes": host_info.memory_bytes()}
    facts["memory_allocated_bytes"] = None  # torch keeps no allocator statistics for the CPU
    facts["memory_peak_bytes"] = None
    facts["bf16_supported"] = True
    facts["fp16_supported"] = True
    facts["fp8_supported"] = "storage and casts"
    return facts


def _accelerator_facts(module, device) -> dict[str, Any]:
    index = device.index or 0
    facts: dict[str, Any] = {"device_count": module.device_count(),
                             "device_name": module.get_device_name(index)}
    try:
        facts["memory_total_bytes"] = module.get_device_properties(index).total_memory
        facts["memory_allocated_bytes"] = module.memory_allocated(index)
        facts["memory_peak_bytes"] = module.max_memory_allocated(index)
    except Exception:  # vendor modules differ in which of these they implement
        pass
    try:
        facts["bf16_supported"] = bool(module.is_bf16_supported())
    except Exception:
        facts["bf16_supported"] = None
    facts["fp16_supported"] = True
    if device.type == "cuda":
        cc = module.get_device_capability(index)
        facts["compute_capability"] = f"{cc[0]}.{cc[1]}"
        facts["fp8_supported"] = "float8 GEMM" if cc >= (8, 9) else "storage and casts"
    else:
        facts["fp8_supported"] = "storage and casts (GEMM support: see the vendor's docs)"
    return facts


_FROM_NUMPY: dict = {}
_TO_NUMPY: dict = {}


def _init_maps() -> None:
    if torch is None:
        return
    from accel.core import dtypes as dt

    for accel_dtype, torch_dtype in K.TORCH_DTYPES.items():
        if accel_dtype in (dt.bfloat16, dt.float8_e4m3fn, dt.float8_e5m2):  # ml_dtypes: no DLPack/torch twin
            width = {1: (np.uint8, torch.uint8), 2: (np.int16, torch.int16)}[accel_dtype.itemsize]
            _FROM_NUMPY[accel_dtype.numpy] = (width[0], torch_dtype)
            _TO_NUMPY[torch_dtype] = (width[1], accel_dtype.numpy)
        else:
            _FROM_NUMPY[accel_dtype.numpy] = (None, torch_dtype)


_init_maps()
