"""Dispatch: the path every op call takes.

Resolution per (op, backend), computed once and cached: the backend's own kernel, else the
op's decomposition into other ops, else a host fallback on the reference backend (with the
transfers done here). Decompositions, fallbacks and dtype downcasts are counted per op; strict
mode turns a fallback into an error. The eager hot path is one dict lookup, the kernel call and
one Tensor wrapper; full shape/dtype rules run only in checked mode, when tracing, or to explain
an exception raised by the native library.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import defaultdict
from typing import Callable

from accel.core import op as _op_module
from accel.core.dtypes import DType
from accel.core.errors import AccelError, BackendError, OpError, UnsupportedError
from accel.core.op import Op
from accel.core.registry import current_backend, reference_backend
from accel.core.spec import describe
from accel.core.tensor import Tensor

log = logging.getLogger("accel")


class _Mode:
    """Global switches read on every call; `hook` is set when any of them needs the slow path."""

    def __init__(self):
        self.strict = os.environ.get("ACCEL_STRICT", "") not in ("", "0")
        self.checked = os.environ.get("ACCEL_CHECKED", "") not in ("", "0")
        self.interceptors: list[Callable] = []  # tracing, autograd, profiling push here
        self.hook = None
        self.refresh()

    def refresh(self) -> None:
        self.hook = _slow_path if (self.checked or self.interceptors) else None
        # Op.__call__ calls the eager path directly while nothing needs the slow one.
        if self.hook is None:
            _op_module.install_dispatcher(eager, eager_prepared)
        else:
            _op_module.install_dispatcher(call, _slow_path)


mode = _Mode.__new__(_Mode)


# --- counters ------------------------------------------------------------------------------
class DispatchStats:
    """How each (backend, op) ran: decomposed, host fallback, downcast (and calls if profiling)."""

    KINDS = ("native", "decomposed", "fallback", "downcast")

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(self.KINDS, 0))
        self._warned: set = set()

    def add(self, backend: str, op: str, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[(backend, op)][kind] += n

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        """{backend: {op: {native, decomposed, fallback, downcast}}}"""
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self._lock:
            for (backend, op), c in sorted(self.counts.items()):
                out.setdefault(backend, {})[op] = dict(c)
        return out

    def reset(self) -> None:
        """Clear the counts, and the once-per-cause warnings with them."""
        with self._lock:
            self.counts.clear()
            self._warned.clear()

    def warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, AccelWarning, stacklevel=4)


class AccelWarning(UserWarning):
    """Something ran, but not the way you might assume (host fallback, dtype downcast)."""


stats = DispatchStats()


# --- the call path -------------------------------------------------------------------------
def call(op: Op, args: tuple, attrs: dict):
    if mode.hook is not None:
        return mode.hook(op, args, attrs)
    return eager(op, args, attrs)


def eager(op: Op, args: tuple, attrs: dict):
    if op._same_dtype_noop:  # x + y with one dtype on one backend: nothing to prepare or check
        a, b = args
        if type(a) is Tensor and type(b) is Tensor and a.backend is b.backend \
                and a.data.dtype is b.data.dtype:
            backend = a.backend
            return (backend._resolved.get(op) or resolve(backend, op))(args, attrs)
    if op.prepare is not None:
        args, attrs = prepared(op, args, attrs)
    # backend_of inlined for one or two plain Tensor inputs on one backend (most calls);
    # anything else (more inputs, non-tensors, mixed backends) goes through backend_of.
    n = op._plain
    if n == 1 and type(args[0]) is Tensor:
        backend = args[0].backend
    elif n == 2 and type(args[0]) is Tensor and type(args[1]) is Tensor \
            and args[0].backend is args[1].backend:
        backend = args[0].backend
    else:
        backend = backend_of(op, args, attrs)
    entry = backend._resolved.get(op)
    if entry is None:
        entry = resolve(backend, op)
    return entry(args, attrs)


def prepared(op: Op, args: tuple, attrs: dict) -> tuple[tuple, dict]:
    """`op.prepare` (scalars to tensors, promotion, dtype guards), its errors with the call in
    front: the one preparation step of eager dispatch, checked mode, tracing and autograd."""
    if op.prepare is None:
        return args, attrs
    try:
        return op.prepare(args, attrs)
    except AccelError as error:
        raise _with_context(op, args, attrs, error) from None
    except (AttributeError, TypeError):  # prepare read a non-Tensor input: say so
        backend_of(op, args, attrs)
        raise


def eager_prepared(op: Op, args: tuple, attrs: dict):
    """`eager` for arguments already in prepared form (see Op.call_prepared)."""
    backend = backend_of(op, args, attrs)
    return (backend._resolved.get(op) or resolve(backend, op))(args, attrs)


def backend_of(op: Op, args: tuple, attrs: dict):
    """The one backend all tensor inputs live on (or the `backend=` attr / current backend)."""
    found = None
    tensors = args[0] if op.variadic else args
    for a in tensors:
        if a is None:
            continue
        if not isinstance(a, Tensor):
            raise OpError(
                f"{op.name}: expected accel.Tensor inputs, got {type(a).__name__} ({describe(a)})",
                hint="wrap host data with accel.tensor(data, backend=...)",
            )
        if found is None:
            found = a.backend
        elif a.backend is not found:
            raise BackendError(
                f"{op.name}: inputs live on different backends ({found.spec} and {a.backend.spec}); "
                f"args: {', '.join(describe(x) for x in tensors)}",
                hint="move them to one backend first with tensor.to('name')",
            )
    if found is None:
        spec = attrs.get("backend")
        if spec is not None:
            from accel.core.registry import get_backend
            return get_backend(spec)
        return current_backend()
    return found


def resolve(backend, op: Op) -> Callable:
    """Build and cache the callable for (backend, op): native, decomposed or host fallback."""
    # A backend with its own dtype policy (npusim) builds the entry for the ops it runs; None
    # (the default hook) leaves the op to the rules below.
    entry = backend.build_entry(op)
    if entry is not None:
        backend._resolved[op] = entry
        return entry
    kernel = backend.kernels.get(op)
    if kernel is not None:
        entry = _native_entry(backend, op, kernel)
        if op in backend.op_dtypes or op in backend.op_outputs or set(backend.dtypes) != _ALL:
            entry = _dtype_guard(backend, op, entry)
    elif op.decompose is not None:
        entry = _decomposed_entry(backend, op)
    else:
        entry = _fallback_entry(backend, op)
    backend._resolved[op] = entry
    return entry


def kernel_attrs(op: Op, attrs: dict, backend) -> dict:
    """The attributes a kernel receives: the `backend` attribute is the dispatcher's, and a
    creation kernel (an op without tensor inputs) gets the instance's `device` to place on."""
    if "backend" in attrs or not op.inputs:
        attrs = {k: v for k, v in attrs.items() if k != "backend"}
        if not op.inputs:
            attrs["device"] = backend.device
    return attrs


def _native_entry(backend, op: Op, kernel: Callable) -> Callable:
    rewrite = "backend" in op.attrs or not op.inputs
    if not (op.variadic or rewrite or op.optional) and op._n in (1, 2):
        return _fixed_arity_entry(backend, op, kernel)

    def run_native(args, attrs):
        try:
            if op.variadic:
                out = kernel([t.data for t in args[0]], *[a.data for a in args[1:]],
                             **(kernel_attrs(op, attrs, backend) if rewrite else attrs))
            else:
                out = kernel(*[a.data if a is not None else None for a in args],
                             **(kernel_attrs(op, attrs, backend) if rewrite else attrs))
        except AccelError as error:  # a backend's own AccelError gets the call in front of it
            raise _contextual(op, args, attrs, error)
        except Exception as exc:
            raise explain(op, backend, args, attrs, exc) from exc
        return Tensor(out, backend)

    return run_native


def _fixed_arity_entry(backend, op: Op, kernel: Callable) -> Callable:
    """The hot path for the common one- and two-input ops: no list building per call."""
    if op._n == 1:
        def run_unary(args, attrs):
            try:
                return Tensor(kernel(args[0].data, **attrs) if attrs else kernel(args[0].data),
                              backend)
            except AccelError as error:
                raise _contextual(op, args, attrs, error)
            except Exception as exc:
                raise explain(op, backend, args, attrs, exc) from exc
        return run_unary

    def run_binary(args, attrs):
        try:
            if attrs:
                return Tensor(kernel(args[0].data, args[1].data, **attrs), backend)
            return Tensor(kernel(args[0].data, args[1].data), backend)
        except AccelError as error:  # a backend's own AccelError gets the call in front of it
            raise _contextual(op, args, attrs, error)
        except Exception as exc:
            raise explain(op, backend, args, attrs, exc) from exc
    return run_binary


def _decomposed_entry(backend, op: Op) -> Callable:
    key = (backend.spec, op.name)

    def run_decomposed(args, attrs):
        stats.add(*key, "decomposed")
        try:
            return op.decompose(*args, **attrs)
        except Exception as exc:  # name the composite the user called, not an op inside it
            raise _explain_decomposition(op, backend, args, attrs, exc)

    return run_decomposed


def _fallback_entry(backend, op: Op) -> Callable:
    def run_fallback(args, attrs):
        return host_fallback(backend, op, args, attrs, reason="the backend has no kernel for it")

    return run_fallback


def host_fallback(backend, op: Op, args: tuple, attrs: dict, *, reason: str):
    """Run `op` on the reference backend, moving inputs to host and the result back."""
    ref = reference_backend()
    if ref is backend:
        raise UnsupportedError(
            f"{op.name}: the reference backend {backend.spec} has no kernel for it",
            hint="this is a bug in the reference backend; every primitive must be there")
    if mode.strict:
        raise UnsupportedError(
            f"{op.name} on {backend.spec}: {reason}; strict mode forbids the host fallback "
            f"(args: {', '.join(describe(a) for a in _flat(op, args))})",
            hint="turn strict off (accel.set_strict(False)) to fall back to the host, "
                 "or add a kernel for this op to the backend")
    stats.add(backend.spec, op.name, "fallback")
    stats.warn_once((backend.spec, op.name, "fallback"),
                    f"accel: {op.name} on {backend.spec} falls back to the host ({reason})")

    def to_ref(t):
        return None if t is None else Tensor(ref.from_numpy(backend.to_numpy(t.data)), ref)

    if op.variadic:
        host_args = ([to_ref(t) for t in args[0]], *[to_ref(a) for a in args[1:]])
    else:
        host_args = tuple(to_ref(a) for a in args)
    attrs = dict(attrs)
    if "backend" in attrs:
        attrs["backend"] = ref
    out = eager(op, host_args, attrs)
    require_stored(backend, op, out.dtype, args)
    return Tensor(backend.from_numpy(ref.to_numpy(out.data)), backend)


def require_stored(backend, op: Op, dtype, args: tuple) -> None:
    """A result in a dtype the backend does not store cannot come back to it: say so."""
    if dtype not in backend.dtypes:
        raise UnsupportedError(
            f"{op.name} on {backend.spec}: the result would be {dtype.name}, which the backend does "
            f"not store (args: {', '.join(describe(a) for a in _flat(op, args))})",
            hint=f"ask for a dtype it stores ({', '.join(d.name for d in backend.dtypes)}), or run "
                 f"this part on another backend (tensor.to('numpy'))")


def refusal(backend, op: Op, inputs, out_dtype) -> str:
    """Why `op`'s kernel on `backend` must not see these dtypes ('' when it may run).

    `inputs` are the dtypes of the tensor inputs as (dtype, carries_data) pairs (None for an
    omitted optional input); `out_dtype` is the result's dtype from the op's rule. Every input
    must be stored by the backend, every data input computed by the op's kernel (`op_dtypes`),
    and the result produced by it (`op_outputs`, see accel.core.backend.Backend)."""
    stored = backend.dtypes
    computes = backend.op_dtypes.get(op)
    for dtype, data in inputs:
        if dtype is None:
            continue
        if dtype not in stored:
            return f"the backend does not store {dtype.name}"
        if data and computes is not None and dtype not in computes:
            return f"the backend does not run it in {dtype.name}"
    if out_dtype is not None and out_dtype not in backend.produces(op):
        return f"the backend does not produce {out_dtype.name} with it"
    return ""


def _call_dtypes(op: Op, args: tuple) -> list:
    if op.variadic:
        return [(t.dtype, True) for t in args[0]] + [
            (a.dtype if a is not None else None, d) for a, d in zip(args[1:], op.data_inputs[1:])]
    return [(a.dtype if a is not None else None, d) for a, d in zip(args, op.data_inputs)]


def _dtype_guard(backend, op: Op, native: Callable) -> Callable:
    """Run natively only when every input dtype and the output dtype are ones the backend
    declares for the op; else decompose, or fall back to the host (counted; an error in strict
    mode). The verdict is remembered per (input dtypes, dtype attributes)."""
    decomposed = _decomposed_entry(backend, op) if op.decompose is not None else None
    verdicts: dict = {}

    def run_guarded(args, attrs):
        inputs = _call_dtypes(op, args)
        key = (tuple(inputs), tuple(v for v in attrs.values() if type(v) is DType))
        reason = verdicts.get(key)
        if reason is None:
            try:
                out_dtype = op.infer(*args, **attrs).dtype
            except AccelError:
                return native(args, attrs)  # bad arguments: the kernel's error is explained as usual
            require_stored(backend, op, out_dtype, args)  # nowhere to put it: refuse before running
            reason = verdicts[key] = refusal(backend, op, inputs, out_dtype)
        if not reason:
            return native(args, attrs)
        if decomposed is not None:
            return decomposed(args, attrs)
        return host_fallback(backend, op, args, attrs, reason=reason)

    return run_guarded


def _flat(op: Op, args: tuple) -> list:
    return [*args[0], *args[1:]] if op.variadic else list(args)


def explain(op: Op, backend, args: tuple, attrs: dict, exc: Exception) -> AccelError:
    """Turn a native library's exception into an AccelError that says what went wrong."""
    shown = ", ".join(describe(a) for a in _flat(op, args))
    shown_attrs = ", ".join(f"{k}={v!r}" for k, v in attrs.items() if k != "backend")
    where = f"{op.name}({shown}{', ' if shown_attrs else ''}{shown_attrs}) on {backend.spec}"
    try:
        op.infer(*args, **attrs)
    except AccelError as rule_error:
        cls = type(rule_error)
        return cls(f"{where}: {rule_error.args[0].split(chr(10))[0]}", hint=rule_error.hint)
    except Exception:
        pass
    return OpError(f"{where} failed in the native library: {type(exc).__name__}: {exc}",
                   hint="check the shapes and dtypes above against the op's docstring; "
                        "run with ACCEL_CHECKED=1 to validate every call")


def _contextual(op: Op, args: tuple, attrs: dict, error: AccelError) -> AccelError:
    new = _with_context(op, args, attrs, error)
    if new is not error:
        new.__cause__ = error
    return new


def _explain_decomposition(op: Op, backend, args: tuple, attrs: dict, exc: Exception) -> Exception:
    """The composite's own rule explains bad input; an error with valid input passes through."""
    try:
        op.infer(*args, **attrs)
    except AccelError as rule_error:
        error = _with_context(op, args, attrs, rule_error)
        error.__cause__ = exc
        return error
    except Exception:
        pass
    if isinstance(exc, AccelError):
        return exc
    error = explain(op, backend, args, attrs, exc)
    error.__cause__ = exc
    return error


def _with_context(op: Op, args: tuple, attrs: dict, error: AccelError) -> AccelError:
    """The same error, its message prefixed with the call (op, args, backend)."""
    try:
        where = backend_of(op, args, attrs).spec
    except AccelError:  # a host array among the inputs: name the backend of the tensors there
        where = next((a.backend.spec for a in _flat(op, args) if isinstance(a, Tensor)), "?")
    shown = ", ".join(describe(a) for a in _flat(op, args))
    message = str(error.args[0]).split("\n")[0] if error.args else str(error)
    if message.startswith(op.name + "("):
        return error
    return type(error)(f"{op.name}({shown}) on {where}: {message}", hint=error.hint)


def _slow_path(op: Op, args: tuple, attrs: dict):
    """Checked mode and interceptors (graph tracing, autograd recording, profiling)."""
    for interceptor in mode.interceptors:
        result = interceptor(op, args, attrs)
        if result is not NotImplemented:
            return result
    return checked_eager(op, args, attrs) if mode.checked else eager(op, args, attrs)


def checked_eager(op: Op, args: tuple, attrs: dict):
    args, attrs = prepared(op, args, attrs)
    backend = backend_of(op, args, attrs)
    try:
        expected = op.infer(*args, **attrs)
    except AccelError as rule_error:
        raise explain(op, backend, args, attrs, rule_error) from None
    entry = backend._resolved.get(op) or resolve(backend, op)
    out = entry(args, attrs)
    if tuple(out.shape) != tuple(expected.shape) or out.dtype is not expected.dtype:
        raise OpError(
            f"{op.name} on {backend.spec} returned {describe(out)} but its rule says "
            f"{expected} (args: {', '.join(describe(a) for a in _flat(op, args))})",
            hint="the backend's kernel disagrees with the op declaration; fix the kernel")
    return out


# --- switches ------------------------------------------------------------------------------
def set_strict(on: bool = True) -> None:
    mode.strict = bool(on)


def set_checked(on: bool = True) -> None:
    mode.checked = bool(on)
    mode.refresh()


def push_interceptor(fn: Callable) -> None:
    mode.interceptors.insert(0, fn)
    mode.refresh()


def pop_interceptor(fn: Callable) -> None:
    mode.interceptors.remove(fn)
    mode.refresh()


_ALL: set = set()


def _init() -> None:
    from accel.core.dtypes import ALL_DTYPES

    _ALL.update(ALL_DTYPES)
    mode.__init__()  # installs the dispatcher into accel.core.op (see _Mode.refresh)


_init()
