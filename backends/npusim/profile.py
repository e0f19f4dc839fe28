"""Chip profiles: what a simulated NPU runs natively, in which dtypes, and how fast.

A profile is a frozen dataclass read from a TOML file in `profiles/` (one file per chip, the
device name is the file name). It is plain data: the backend builds its kernel table, dtype
rules and cost model from it, so adding a chip means adding a file, not code.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from accel.core.dtypes import DType, as_dtype
from accel.core.errors import BackendError, DTypeError
from accel.ops import BY_NAME

PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
DEFAULT_PROFILE = "ascend910b"

# Units with a cost model of their own: "cube" and "vector" compute (flops / peak), "dma" only
# moves bytes, "view" changes metadata and launches nothing (reshape).
UNITS = ("cube", "vector", "dma", "view")


@dataclass(frozen=True)
class Unit:
    name: str
    peak_flops: Mapping[DType, float]      # FLOP/s (or OP/s for integers) per input dtype
    accumulate: DType | None = None        # what a matrix unit accumulates low precision in


@dataclass(frozen=True)
class OpSupport:
    op: str
    unit: str
    dtypes: frozenset[DType]


@dataclass(frozen=True)
class ChipProfile:
    name: str
    title: str
    memory_capacity: int          # bytes of device memory
    memory_bandwidth: float       # bytes/s, device memory
    host_bandwidth: float         # bytes/s, host <-> device link, each direction
    launch_overhead: float        # seconds per kernel launch
    units: Mapping[str, Unit]
    ops: Mapping[str, OpSupport]  # natively run ops, by op name
    downcast_order: tuple[DType, ...]  # what the `downcast` policy tries, widest first
    sources: tuple[str, ...] = ()

    @property
    def dtypes(self) -> frozenset[DType]:
        """Every dtype some native op computes in."""
        out: set[DType] = set()
        for support in self.ops.values():
            out |= support.dtypes
        return frozenset(out)

    def peak(self, unit: str, dtype: DType) -> float:
        peaks = self.units[unit].peak_flops
        return peaks.get(dtype) or min(peaks.values())


def _bytes(value, where: str) -> int:
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]i?B|B)\s*", str(value))
    if not match:
        raise BackendError(f"{where}: memory size {value!r} is not understood",
                           hint="write bytes as an integer or a string such as '64GiB' or '512MB'")
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
             "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


parse_bytes = _bytes


def _dtype(name: str, where: str) -> DType:
    try:
        return as_dtype(name)
    except DTypeError as exc:
        raise BackendError(f"{where}: {exc.args[0].splitlines()[0]}", hint=exc.hint) from None


def from_dict(data: dict, where: str = "<profile>") -> ChipProfile:
    """Build and validate a profile; every mistake names the file and the key."""
    try:
        units = {}
        for name, spec in data["units"].items():
            if name not in UNITS:
                raise BackendError(f"{where}: unknown unit {name!r}", hint=f"units are {', '.join(UNITS)}")
            peaks = {_dtype(k, where): float(v) for k, v in spec.get("peak_flops", {}).items()}
            if name in ("cube", "vector") and not peaks:
                raise BackendError(f"{where}: unit {name!r} needs peak_flops",
                                   hint="give FLOP/s per dtype, e.g. peak_flops = { float16 = 3.2e14 }")
            accumulate = spec.get("accumulate")
            accumulate = _dtype(accumulate, where) if accumulate else None
            if accumulate is not None and accumulate.name not in ("float32", "int32"):
                raise BackendError(f"{where}: unit {name!r} accumulates in {accumulate.name}",
                                   hint="only float32 (and int32 for int8) accumulation is emulated")
            units[name] = Unit(name, MappingProxyType(peaks), accumulate)
        units.setdefault("view", Unit("view", MappingProxyType({})))
        ops: dict[str, OpSupport] = {}
        for group in data["ops"]:
            unit = group["unit"]
            if unit not in units:
                raise BackendError(f"{where}: ops {group['names']} use unit {unit!r}, which is not declared",
                                   hint=f"declare [units.{unit}] or use one of {', '.join(units)}")
            dtypes = frozenset(_dtype(d, where) for d in group["dtypes"])
            for op_name in group["names"]:
                if op_name not in BY_NAME:
                    raise BackendError(f"{where}: unknown op {op_name!r}",
                                       hint="use op names from accel.ops.BY_NAME (see `accel info`)")
                if op_name in ops:
                    raise BackendError(f"{where}: op {op_name!r} is listed twice", hint="list each op once")
                ops[op_name] = OpSupport(op_name, unit, dtypes)
        return ChipProfile(
            name=data["name"],
            title=data.get("title", data["name"]),
            memory_capacity=_bytes(data["memory_capacity"], where),
            memory_bandwidth=float(data["memory_bandwidth"]),
            host_bandwidth=float(data["host_bandwidth"]),
            launch_overhead=float(data["launch_overhead"]),
            units=MappingProxyType(units),
            ops=MappingProxyType(ops),
            downcast_order=tuple(_dtype(d, where) for d in data.get("downcast_order", ())),
            sources=tuple(data.get("sources", ())),
        )
    except KeyError as missing:
        raise BackendError(f"{where}: missing key {missing.args[0]!r}",
                           hint="see backends/npusim/profiles/ascend910b.toml for every key") from None


def load_profile(name_or_path: str) -> ChipProfile:
    """A shipped profile by name (`ascend910b`, `minimal`) or a TOML file by path."""
    path = name_or_path if name_or_path.endswith(".toml") else os.path.join(PROFILE_DIR, f"{name_or_path}.toml")
    if not os.path.isfile(path):
        raise BackendError(f"npusim has no chip profile {name_or_path!r}; shipped: {', '.join(profile_names())}",
                           hint="pick one of the shipped profiles (npusim:<profile>) or pass a .toml path")
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise BackendError(f"{path}: not valid TOML: {exc}", hint="fix the file's syntax") from None
    return from_dict(data, where=path)


def profile_names() -> tuple[str, ...]:
    names = sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".toml"))
    # the default first: `get_backend("npusim")` and listings show it before the others
    return tuple(sorted(names, key=lambda n: n != DEFAULT_PROFILE))
