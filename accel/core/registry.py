"""Backend discovery and selection.

Plugins come from the `accel.backends` entry-point group, in-tree ones included; nothing here
names a concrete backend. Selection: explicit argument > `with accel.use(...)` >
`ACCEL_BACKEND` > auto-detect (highest priority first, the reference backend last).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import inspect
import logging
import os
import threading
from dataclasses import dataclass

from accel.core.backend import Backend, Probe
from accel.core.dtypes import bool_, int64
from accel.core.errors import BackendError

log = logging.getLogger("accel")

ENTRY_POINT_GROUP = "accel.backends"

_lock = threading.RLock()
_classes: dict[str, type[Backend] | BaseException] | None = None
_instances: dict[str, Backend] = {}
_current: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("accel_backend", default=None)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str
    devices: tuple[str, ...]
    install_hint: str = ""


def check_backend(cls_or_instance) -> None:
    """The contract of `accel.core.backend.Backend`, checked when a plugin registers (and again
    for the kernel table an instance builds itself): raises BackendError naming what to change."""
    cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
    where = f"backend plugin {cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"{where} is not an accel.core.backend.Backend subclass",
                           hint="subclass accel.core.backend.Backend (docs/porting.md)")
    if not cls.name:
        raise BackendError(f"{where} has no `name`", hint="set the class attribute name = 'mychip'")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise BackendError(f"{where} ({cls.name}) does not implement {', '.join(missing)}",
                           hint="define these methods (docs/porting.md: host transfer and native facts)")
    stored = set(cls_or_instance.dtypes)
    lacking = [d.name for d in (bool_, int64) if d not in stored]
    if lacking:
        raise BackendError(
            f"{where} ({cls.name}) declares dtypes without {' and '.join(lacking)}",
            hint="every backend stores bool (masks, comparisons) and int64 (indices, token ids): add them "
                 "to `dtypes`; restrict what a kernel computes with `op_dtypes` instead")
    for op, kernel in cls_or_instance.kernels.items():
        if not op.inputs and not _takes_device(kernel):
            raise BackendError(
                f"{where} ({cls.name}): the kernel for {op.name} does not take `device`",
                hint=f"creation kernels are called as {op.name}(*, {', '.join(k for k in op.attrs if k != 'backend')}, "
                     f"device) with the backend instance's device; add a `device` keyword")


def _takes_device(kernel) -> bool:
    try:
        params = inspect.signature(kernel).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return True
    return any(p.name == "device" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _load_classes() -> dict[str, type[Backend] | BaseException]:
    """Import every plugin once. A plugin that fails to import is recorded, never raised."""
    global _classes
    with _lock:
        if _classes is not None:
            return _classes
        found: dict[str, type[Backend] | BaseException] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found:
                continue
            try:
                cls = ep.load()
                if not (isinstance(cls, type) and issubclass(cls, Backend)):
                    raise TypeError(f"{ep.value} is not an accel.Backend subclass")
                check_backend(cls)
                found[ep.name] = cls
            except BaseException as exc:  # a broken plugin must never break `import accel`
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                log.debug("backend plugin %s failed to load: %r", ep.name, exc)
                found[ep.name] = exc
        _classes = found
        return found


def register_backend(cls: type[Backend]) -> None:
    """Register a backend class directly (tests, notebooks). Packages use the entry point.
    Raises BackendError naming what to change when the class breaks the backend contract."""
    check_backend(cls)
    classes = _load_classes()
    with _lock:
        classes[cls.name] = cls
        for key in [k for k in _instances if k.split(":")[0] == cls.name]:
            del _instances[key]


def _probe(cls: type[Backend]) -> Probe:
    try:
        return cls.probe()
    except Exception as exc:  # probing is best effort; a failure means "unavailable"
        return Probe(False, reason=f"probe failed: {exc!r}")


def available_backends() -> dict[str, BackendStatus]:
    """Every installed plugin: available (with devices) or unavailable and why."""
    out = {}
    for name, cls in sorted(_load_classes().items()):
        if isinstance(cls, BackendError):  # it imported, but breaks the backend contract
            message = str(cls.args[0]).split("\nHINT:")[0]
            out[name] = BackendStatus(name, False, f"plugin rejected: {message}", (), cls.hint or "")
            continue
        if isinstance(cls, BaseException):
            out[name] = BackendStatus(name, False, f"plugin failed to import: {cls!r}", ())
            continue
        p = _probe(cls)
        out[name] = BackendStatus(name, p.available, p.reason, p.devices, p.install_hint)
    return out


def backend_class(name: str) -> type[Backend]:
    classes = _load_classes()
    cls = classes.get(name)
    if cls is None:
        raise BackendError(
            f"unknown backend {name!r}; installed: {', '.join(sorted(classes)) or 'none'}",
            hint="pick an installed backend (see `accel info`), or install its plugin, "
                 "e.g. `pip install 'accel-layer[torch]'`, `[jax]` or `[onnx]`",
        )
    if isinstance(cls, BackendError):
        raise cls  # the contract check's own words: what to change
    if isinstance(cls, BaseException):
        raise BackendError(f"backend {name!r} failed to import: {cls!r}",
                           hint="reinstall the plugin's package or check its dependencies")
    return cls


def reference_backend() -> Backend:
    """The CPU reference (host fallback target and conformance reference)."""
    for name, cls in _load_classes().items():
        if not isinstance(cls, BaseException) and cls.is_reference:
            return get_backend(name)
    raise BackendError("no reference backend is installed",
                       hint="reinstall accel: the numpy reference backend ships with it")


def get_backend(spec=None) -> Backend:
    """Resolve `name[:device[:index]]`, a Backend instance, or None (the current backend)."""
    if spec is None:
        return current_backend()
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str) or not spec:
        raise BackendError(f"backend must be a name like 'numpy' or 'torch:cuda:0', got {spec!r}")
    with _lock:
        inst = _instances.get(spec)
        if inst is not None:
            return inst
        name, _, device = spec.partition(":")
        cls = backend_class(name)
        p = _probe(cls)
        if not p.available:
            raise BackendError(f"backend {name!r} is installed but unavailable: {p.reason}",
                               hint=p.install_hint or "see `accel info` for what is available")
        device = device or cls.default_device()
        if p.devices and device not in p.devices:
            raise BackendError(
                f"backend {name!r} has no device {device!r}; devices here: {', '.join(p.devices)}",
                hint=f"use one of: {', '.join(f'{name}:{d}' for d in p.devices)}",
            )
        inst = cls(device)
        if inst.kernels is not cls.kernels or inst.dtypes is not cls.dtypes:
            check_backend(inst)  # a table built per instance (npusim's from its chip profile)
        _instances[spec] = inst
        _instances.setdefault(inst.spec, inst)
        return inst


def auto_backend() -> Backend:
    """The best available backend: accelerators first, the reference backend last."""
    ranked = []
    for name, cls in _load_classes().items():
        if isinstance(cls, BaseException):
            continue
        p = _probe(cls)
        if p.available:
            ranked.append((-1 if cls.is_reference else cls.priority, name))
    if not ranked:
        return reference_backend()
    ranked.sort(reverse=True)
    return get_backend(ranked[0][1])


def current_backend() -> Backend:
    inst = _current.get()
    if inst is not None:
        return inst
    env = os.environ.get("ACCEL_BACKEND")
    if env:
        return get_backend(env)
    return _default()


_default_backend: Backend | None = None


def _default() -> Backend:
    global _default_backend
    if _default_backend is None:
        _default_backend = auto_backend()
    return _default_backend


class use:
    """`with accel.use("torch:cuda:0"):` selects the backend for ops without tensor inputs
    (creation, loading). Calling `accel.use("name")` without `with` sets it for good."""

    def __init__(self, spec):
        self.backend = get_backend(spec)
        self._token = _current.set(self.backend)

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
