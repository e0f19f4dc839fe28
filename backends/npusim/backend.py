"""npusim: a simulated transformer accelerator with narrow capabilities, and the template for a
vendor backend plugin.

`npusim:<profile>` opens one simulated chip described by `profiles/<profile>.toml`. Its tensors
live in a simulated device memory with a capacity; host <-> device copies are explicit and
counted; every kernel adds simulated time from the profile's cost model; results carry the
chip's precision. What the chip cannot run in a dtype follows the dtype policy:

- `error` (default): raise UnsupportedError naming the op, dtype and what the chip takes;
- `downcast`: run it in a narrower dtype the chip has (float32 matmul in bfloat16), counted as
  "downcast" in `accel.core.dispatch.stats` and warned once, as Ascend's allow_fp32_to_fp16 does;
- `fallback`: run it on the host through the dispatcher's host fallback (counted, and refused
  in strict mode).

A composite the chip cannot run in that dtype first decomposes (no precision is lost), and an op
the chip has no kernel for at all takes the dispatcher's usual path (decompose or host fallback).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from accel import ops
from accel.core import dispatch
from accel.core.backend import Backend, Probe
from accel.core.dtypes import ALL_DTYPES, DType, float32, from_numpy_dtype
from accel.core.errors import BackendError, UnsupportedError
from accel.core.op import Op
from accel.core.spec import describe

from .cost import CostLedger, count_bytes, count_flops, kernel_time
from .faults import FaultInjector, FaultPlan
from .memory import DeviceArray, DeviceMemory
from .numerics import host_inplace_index_copy, host_kernel
from .profile import DEFAULT_PROFILE, ChipProfile, load_profile, parse_bytes, profile_names

POLICIES = ("error", "downcast", "fallback")
# Inputs that carry indices or masks, not data: their int/bool dtype says nothing about which
# arithmetic the chip must have, so the dtype policy does not look at them.
_INDEX_INPUTS = frozenset({"indices", "index", "ids", "targets", "mask", "cond"})
_DTYPES = {d.numpy: d for d in ALL_DTYPES}
_UNSET: Any = object()


def _env_number(name: str, kind: type, default):
    """An int/float environment variable, or `default` when unset; a bad value names itself."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise BackendError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}",
                           hint=f"set {name} to {'e.g. 14' if kind is int else 'e.g. 0.001'}, "
                                "or unset it") from None


class NpuSimBackend(Backend):
    name = "npusim"
    priority = -10  # a simulator is never what auto-detect should pick
    collective_backend = "gloo"  # through the host link: each collective is a counted d2h + h2d
    kernels: dict[Op, Callable] = {}  # per instance, from the profile

    @classmethod
    def probe(cls) -> Probe:
        # ACCEL_NPUSIM_DEVICES=N simulates N chips of each profile, named <profile>:0 .. :N-1,
        # each with its own memory, ledger and fault plan (spare-device failover runs on them)
        count = _env_number("ACCEL_NPUSIM_DEVICES", int, 1)
        names = profile_names()
        return Probe(True, devices=names + tuple(f"{n}:{i}" for n in names for i in range(count) if count > 1))

    @classmethod
    def default_device(cls) -> str:
        return DEFAULT_PROFILE

    def __init__(self, device: str | None = None, *, profile: ChipProfile | None = None):
        if profile is not None:
            device = profile.name
        super().__init__(device)
        name, _, index = self.device.rpartition(":")
        self.profile = profile or load_profile(name if name and index.isdigit() else self.device)
        env = os.environ
        # ACCEL_NPUSIM_FAULT_DEVICE=<profile>:<i> confines the fault plan below to that one chip
        faulty = env.get("ACCEL_NPUSIM_FAULT_DEVICE") in (None, "", self.device)
        self.memory = DeviceMemory(parse_bytes(env.get("ACCEL_NPUSIM_MEMORY") or self.profile.memory_capacity,
                                               "ACCEL_NPUSIM_MEMORY"), self.spec)
        self.ledger = CostLedger()
        self.faults = FaultInjector(self.spec, FaultPlan(
            at=_env_number("ACCEL_NPUSIM_FAULT_AT", int, None),
            rate=_env_number("ACCEL_NPUSIM_FAULT_RATE", float, 0.0),
            seed=_env_number("ACCEL_NPUSIM_FAULT_SEED", int, 0)) if faulty else FaultPlan())
        self.dtype_policy = "error"
        self._set_policy(env.get("ACCEL_NPUSIM_DTYPE_POLICY") or "error")
        self._current_op: str | None = None  # which op a host transfer belongs to (fallbacks)
        self._build_tables()

    # --- configuration ---------------------------------------------------------------------
    def configure(self, *, dtype_policy: str = _UNSET, memory_capacity=_UNSET, fault_at=_UNSET,
                  fault_rate=_UNSET, fault_seed=_UNSET) -> "NpuSimBackend":
        """Change this device's dtype policy, memory capacity or fault plan (returns self)."""
        if dtype_policy is not _UNSET:
            self._set_policy(dtype_policy)
        if memory_capacity is not _UNSET:
            self.memory.capacity = parse_bytes(memory_capacity, "memory_capacity")
        if fault_at is not _UNSET or fault_rate is not _UNSET or fault_seed is not _UNSET:
            plan = self.faults.plan
            self.faults.set_plan(FaultPlan(
                at=plan.at if fault_at is _UNSET else (None if fault_at is None else int(fault_at)),
                rate=plan.rate if fault_rate is _UNSET else float(fault_rate or 0.0),
                seed=plan.seed if fault_seed is _UNSET else int(fault_seed)))
        return self

    def _set_policy(self, policy: str) -> None:
        if policy not in POLICIES:
            raise BackendError(f"{self.spec}: unknown dtype policy {policy!r}",
                               hint=f"use one of: {', '.join(POLICIES)} (ACCEL_NPUSIM_DTYPE_POLICY)")
        self.dtype_policy = policy

    # --- the kernel table, built from the profile ------------------------------------------
    def _build_tables(self) -> None:
        order = {d: i for i, d in enumerate(ALL_DTYPES)}
        self.kernels, self.op_dtypes = {}, {}
        for name, support in self.profile.ops.items():
            op = ops.BY_NAME[name]
            self.kernels[op] = self._make_kernel(op, support.unit, support.dtypes)
            self.op_dtypes[op] = tuple(sorted(support.dtypes, key=order.__getitem__))
        self.dtypes = tuple(sorted(self.profile.dtypes, key=order.__getitem__))
        support = self.profile.ops.get("index_copy")
        self.inplace_kernels = {} if support is None else {
            ops.index_copy: self._make_inplace(support.unit, support.dtypes)}

    def _make_kernel(self, op: Op, unit: str, allowed: frozenset) -> Callable:
        host = host_kernel(op)
        name, variadic, profile, ledger = op.name, op.variadic, self.profile, self.ledger

        def kernel(*args, **attrs):
            if variadic:
                host_args = [[a.array for a in args[0]], *[a.array for a in args[1:]]]
                first = host_args[0][0] if host_args[0] else None
            else:
                host_args = [None if a is None else a.array for a in args]
                first = host_args[0] if host_args else None
            target = attrs.get("dtype")
            if target is not None and target not in allowed:
                raise UnsupportedError(f"{name} to {target.name} on {self.spec}: the chip has no {target.name}",
                                       hint=f"{name} runs in {_names(allowed)} here")
            dtype = _DTYPES.get(first.dtype, float32) if first is not None else target
            self.faults.check(f"{name}({', '.join(_shape(a) for a in host_args)})")
            with np.errstate(all="ignore"):  # the chip computes IEEE specials silently
                out = np.asarray(host(*host_args, **attrs))
            result = self._wrap(out, args, variadic, name)
            flat = host_args[0] + host_args[1:] if variadic else host_args
            flops = count_flops(name, flat, out) if unit in ("cube", "vector") else 0.0
            nbytes = count_bytes(flat, out)
            ledger.charge(name, kernel_time(profile, unit, dtype, flops, nbytes), flops, nbytes)
            return result

        kernel.__name__ = f"npusim_{name}"
        return kernel

    def _make_inplace(self, unit: str, allowed: frozenset) -> Callable:
        host = host_inplace_index_copy()

        def index_copy_inplace(x, index, values, *, axis=0):
            dtype = _DTYPES.get(x.array.dtype)
            if dtype not in allowed:
                raise UnsupportedError(f"index_copy_ on {self.spec}: the chip has no {x.array.dtype}",
                                       hint=f"index_copy runs in {_names(allowed)} here")
            self.faults.check(f"index_copy_({_shape(x.array)}, {_shape(values.array)})")
            host(x.array, index.array, values.array, axis=axis)
            nbytes = 2 * values.array.nbytes + index.array.nbytes  # read values, write the slots
            self.ledger.charge("index_copy", kernel_time(self.profile, unit, dtype, 0.0, nbytes), 0.0, nbytes)

        return index_copy_inplace

    def _wrap(self, out: np.ndarray, args: tuple, variadic: bool, what: str) -> DeviceArray:
        """The output as a device array: a view of an input when numpy made one, else new memory."""
        inputs = [*args[0], *args[1:]] if variadic else args
        for a in inputs:
            if a is not None and np.may_share_memory(out, a.array):
                return DeviceArray(out, None, owner=a)
        return DeviceArray(out, self.memory, f"the output of {what}, {_shape(out)}")

    # --- resolution: where the dtype policy applies ----------------------------------------
    def build_entry(self, op: Op) -> Callable | None:
        """The dispatcher's entry for `op` here (None: let the dispatcher decompose or fall back)."""
        kernel = self.kernels.get(op)
        if kernel is None:
            return None
        native = dispatch._native_entry(self, op, kernel)
        allowed = self.profile.ops[op.name].dtypes
        decomposed = dispatch._decomposed_entry(self, op) if op.decompose is not None else None
        data_inputs = tuple(i for i, n in enumerate(op.inputs) if n not in _INDEX_INPUTS)
        variadic = op.variadic

        def run_on_chip(args, attrs):
            tensors = args[0] if variadic else [args[i] for i in data_inputs]
            for t in tensors:
                if t is not None and t.dtype not in allowed:
                    if decomposed is not None:
                        return decomposed(args, attrs)
                    return self._unsupported(op, native, args, attrs, t.dtype, allowed, data_inputs)
            target = attrs.get("dtype")
            if target is not None and target not in allowed:
                if decomposed is not None:
                    return decomposed(args, attrs)
                return self._unsupported(op, native, args, attrs, target, allowed, None)
            return native(args, attrs)

        return run_on_chip

    def _unsupported(self, op: Op, native: Callable, args: tuple, attrs: dict, dtype: DType,
                     allowed: frozenset, data_inputs: tuple | None):
        reason = f"{self.profile.name} runs {op.name} in {_names(allowed)}, not {dtype.name}"
        if self.dtype_policy == "fallback":
            previous, self._current_op = self._current_op, op.name
            try:
                return dispatch.host_fallback(self, op, args, attrs, reason=reason)
            finally:
                self._current_op = previous
        if self.dtype_policy == "downcast" and data_inputs is not None:
            target = next((d for d in (float32, *self.profile.downcast_order)
                           if d.is_floating and dtype.is_floating and d.itemsize < dtype.itemsize
                           and d in allowed), None)
            if target is not None:
                return self._downcast(op, native, args, attrs, dtype, target, data_inputs)
        shown = ", ".join(describe(a) for a in (args[0] if op.variadic else args))
        can_downcast = "" if self.dtype_policy == "downcast" else "'downcast' (compute in a narrower dtype) or "
        raise UnsupportedError(
            f"{op.name}({shown}) on {self.spec}: the chip cannot run it: {reason} "
            f"(dtype_policy={self.dtype_policy!r})",
            hint=f"compute {op.name} in a dtype the chip runs ({_names(allowed)}), or set the dtype "
                 f"policy to {can_downcast}'fallback' (run on the host): "
                 f"backend.configure(dtype_policy=...), ACCEL_NPUSIM_DTYPE_POLICY, or "
                 f"`accel port-report --set dtype_policy=...`")

    def _downcast(self, op: Op, native: Callable, args: tuple, attrs: dict, dtype: DType,
                  target: DType, data_inputs: tuple):
        dispatch.stats.add(self.spec, op.name, "downcast")
        dispatch.stats.warn_once((self.spec, op.name, "downcast"),
                                 f"accel: {op.name} on {self.spec} computes {dtype.name} in {target.name} "
                                 f"(dtype_policy='downcast'); expect {target.name} precision")
        narrowed = list(args)
        for i in data_inputs:
            t = args[i]
            if t is not None and t.dtype is dtype:
                narrowed[i] = ops.cast(t, target)
        out = native(tuple(narrowed), attrs)
        return ops.cast(out, dtype) if out.dtype is target else out

    # --- host transfer and native facts ----------------------------------------------------
    def from_numpy(self, array) -> DeviceArray:
        host = np.array(array, copy=True, order="C")
        self._transfer("h2d", host.nbytes)
        return DeviceArray(host, self.memory, f"a host-to-device copy {_shape(host)}")

    def to_numpy(self, native) -> np.ndarray:
        if not isinstance(native, DeviceArray):
            return np.asarray(native)
        host = native.array.copy()
        self._transfer("d2h", host.nbytes)
        return host

    def _transfer(self, direction: str, nbytes: int) -> None:
        # each copy is a DMA the host has to start and wait for, like a kernel launch
        seconds = self.profile.launch_overhead + nbytes / self.profile.host_bandwidth
        self.ledger.transfer(direction, nbytes, seconds, self._current_op or "host transfer")

    def scalar(self, value, dtype: DType) -> DeviceArray:
        # A Python scalar rides along with the kernel launch (an immediate), not as a copy.
        return DeviceArray(np.asarray(value, dtype=dtype.numpy), self.memory, "a scalar")

    def dtype_of(self, native) -> DType:
        return _DTYPES.get(native.dtype) or from_numpy_dtype(native.dtype)

    def device_facts(self) -> dict[str, Any]:
        p = self.profile
        return {
            "device_count": _env_number("ACCEL_NPUSIM_DEVICES", int, 1),
            "device_name": p.title,
            "simulated": True,
            "memory_capacity": self.memory.capacity,
            "memory_bandwidth": p.memory_bandwidth,
            "host_bandwidth": p.host_bandwidth,
            "launch_overhead": p.launch_overhead,
            "peak_flops": {u.name: {d.name: f for d, f in u.peak_flops.items()}
                           for u in p.units.values() if u.peak_flops},
            "dtype_policy": self.dtype_policy,
        }

    # --- what the simulation measured ------------------------------------------------------
    @property
    def simulated_time(self) -> float:
        """Simulated seconds of device work and host transfers since the last reset."""
        return self.ledger.time

    def counters(self) -> dict[str, Any]:
        return {
            "simulated_time": self.ledger.time,
            "kernel_launches": self.ledger.launches,
            "h2d_bytes": self.ledger.h2d_bytes,
            "d2h_bytes": self.ledger.d2h_bytes,
            "transfer_time": self.ledger.transfer_time,
            "memory_in_use": self.memory.in_use,
            "memory_peak": self.memory.peak,
            "memory_capacity": self.memory.capacity,
            "faults_injected": self.faults.injected,
        }

    def op_breakdown(self) -> dict[str, dict[str, float]]:
        """{op: {calls, seconds, flops, bytes, share}} of the simulated time, biggest first."""
        return self.ledger.breakdown()

    def reset_counters(self) -> None:
        """Zero the clock, the transfer counts and the memory high-water mark."""
        self.ledger.reset()
        self.memory.peak = self.memory.in_use


def _names(dtypes) -> str:
    order = {d: i for i, d in enumerate(ALL_DTYPES)}
    return ", ".join(d.name for d in sorted(dtypes, key=order.__getitem__))


def _shape(a) -> str:
    if a is None:
        return "None"
    if isinstance(a, list):
        return "[" + ", ".join(_shape(x) for x in a) + "]"
    d = _DTYPES.get(a.dtype)
    return f"{d.name if d else a.dtype}{list(a.shape)}"
