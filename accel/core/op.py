"""The Op object: one declaration holds an op's signature, shape/dtype rule, numpy float64
reference, decomposition (for composites), VJP, ONNX operator name and conformance cases (JAX
`lax` style).

An op registers itself when it is declared (`REGISTRY`); `accel.ops` imports every module of its
package and re-exports the ops it finds, so a new op needs no import list anywhere. Calling an
op binds its arguments and hands them to the dispatcher (`accel.core.dispatch`).
"""
from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

from accel.core.errors import OpError

PRIMITIVE = "primitive"
COMPOSITE = "composite"

# Every op declared so far, by name, in declaration order (accel.ops lists the library's own).
REGISTRY: dict[str, "Op"] = {}
# Inputs that carry indices or masks, not data: their int/bool dtype says nothing about which
# arithmetic a kernel must have, so a backend's per-op compute dtypes do not judge them.
INDEX_INPUTS = frozenset({"indices", "index", "ids", "targets", "mask", "cond"})


class Op:
    """An op declared once in `accel/ops/`. Hashable by identity: kernel tables key on it."""

    __slots__ = (
        "name", "kind", "inputs", "attrs", "infer", "reference", "decompose", "vjp", "cases",
        "prepare", "doc", "variadic", "optional", "accumulating", "exact", "dtypes", "onnx", "_n",
        "_attr_names", "_plain", "_binds", "_same_dtype_noop", "module", "data_inputs", "__signature__",
        "__weakref__",
    )

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        inputs: tuple[str, ...],
        infer: Callable,
        reference: Callable,
        attrs: dict[str, Any] | None = None,
        decompose: Callable | None = None,
        vjp: Callable | None = None,
        cases: Any = None,
        prepare: Callable | None = None,
        dtypes: tuple = (),
        variadic: bool = False,
        accumulating: bool = False,
        exact: bool = False,
        onnx: str | None = None,
        optional: tuple[str, ...] = (),
        doc: str = "",
    ):
        if kind == COMPOSITE and decompose is None:
            raise ValueError(f"composite op {name} needs a decomposition")
        self.name = name
        self.kind = kind
        self.inputs = inputs
        self.attrs = dict(attrs or {})
        self.infer = infer            # (*tensors_or_specs, **attrs) -> TensorSpec; raises OpError
        self.reference = reference    # numpy float64 implementation, independent of any backend
        self.decompose = decompose    # (*tensors, **attrs) -> Tensor, written in accel ops
        self.vjp = vjp                # (cotangent, output, *inputs, **attrs) -> tuple of grads
        self.cases = cases            # conformance case generator (accel.conformance.generators)
        self.prepare = prepare        # eager argument normalisation: scalars, promotion, dtype guard
        self.dtypes = tuple(dtypes)   # dtypes the op accepts on its first input
        self.variadic = variadic      # first input is a sequence of tensors (concat)
        self.accumulating = accumulating  # judged by NMSE rather than elementwise tolerance
        self.exact = exact            # judged bit for bit (casts, indices, movement)
        self.onnx = onnx              # the ONNX operator it corresponds to (export, oracle, probe read it)
        self.optional = optional      # tensor inputs that may be omitted (None)
        self.doc = doc
        self._n = len(inputs)
        self.data_inputs = tuple(n not in INDEX_INPUTS for n in inputs)  # per input: carries data
        self._attr_names = tuple(self.attrs)
        # 1 or 2 required tensor inputs (0 otherwise): the dispatcher finds the backend inline.
        self._plain = self._n if self._n in (1, 2) and not variadic and not optional else 0
        self._binds = bool(self._attr_names or optional)  # a call always goes through bind
        # Two tensors of one dtype on one backend need no preparation (prepare_binary says so).
        self._same_dtype_noop = self._plain == 2 and getattr(prepare, "same_dtype_is_noop", False)
        self.__signature__ = self._build_signature()
        self.module = sys._getframe(1).f_globals.get("__name__", "?")  # the declaring module
        _register(self)

    def defvjp(self, rule: Callable) -> Callable:
        """Decorator that sets the op's VJP right below its declaration:

            @exp.defvjp
            def _exp_vjp(g, out, x):
                return (mul(g, out),)
        """
        self.vjp = rule
        return rule

    def _build_signature(self) -> inspect.Signature:
        """What `inspect.signature(op)` and `help(op)` show: tensor inputs, then attributes."""
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(i, kind, default=None) if i in self.optional else inspect.Parameter(i, kind)
                  for i in self.inputs]
        params += [inspect.Parameter(k, kind, default=v) for k, v in self.attrs.items()]
        return inspect.Signature(params)

    @property
    def __name__(self) -> str:
        return self.name

    def __get__(self, instance, owner=None):
        """Ops behave like functions: as a class attribute one binds its first input, and
        `help(op)` documents it as a function (signature and docstring)."""
        if instance is None:
            return self
        import functools

        return functools.partial(self, instance)

    @property
    def __doc__(self) -> str:  # help(accel.ops.softmax) shows the op's own docstring
        return self.doc or f"The {self.name} op."

    @property
    def is_primitive(self) -> bool:
        return self.kind == PRIMITIVE

    def __repr__(self) -> str:
        return f"<accel op {self.name} ({self.kind})>"

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Split a call into (tensor inputs, attrs with defaults filled)."""
        n = self._n
        if not kwargs and len(args) == n + len(self._attr_names):  # everything positional
            return args[:n], dict(zip(self._attr_names, args[n:]))
        if not kwargs and n <= len(args) <= n + len(self._attr_names):
            attrs = dict(self.attrs)  # the common positional call: no name lookups needed
            if len(args) > n:
                attrs.update(zip(self._attr_names, args[n:]))
            return args[:n], attrs
        tensors = list(args[:n])
        attrs = dict(self.attrs)
        extra = args[n:]
        if len(extra) > len(self._attr_names):
            raise OpError(
                f"{self.name}() takes {n + len(self._attr_names)} arguments, got {len(args)}",
                hint=f"signature: {self.signature()}",
            )
        for name, value in zip(self._attr_names, extra):
            attrs[name] = value
        if len(tensors) < n:
            tensors.extend([_MISSING] * (n - len(tensors)))
        for key, value in kwargs.items():
            if key in self.attrs:
                attrs[key] = value
            elif key in self.inputs:
                tensors[self.inputs.index(key)] = value
            else:
                raise OpError(f"{self.name}() got an unexpected argument {key!r}",
                              hint=f"signature: {self.signature()}")
        for i, t in enumerate(tensors):
            if t is _MISSING:
                if self.inputs[i] in self.optional:
                    tensors[i] = None
                    continue
                raise OpError(f"{self.name}() is missing input {self.inputs[i]!r}",
                              hint=f"signature: {self.signature()}")
        return tuple(tensors), attrs

    def signature(self) -> str:
        return f"{self.name}{self.__signature__}"

    def __call__(self, *args, **kwargs):
        if kwargs or self._binds or len(args) != self._n:
            args, kwargs = self.bind(args, kwargs)
        return _dispatch(self, args, kwargs)

    def call_prepared(self, args: tuple, attrs: dict):
        """Dispatch arguments already in the form `prepare` returns (tensor indexing builds
        slice attrs itself); eager mode skips `prepare`, interceptors and checked mode see the
        call as usual (prepare is idempotent)."""
        return _dispatch_prepared(self, args, attrs)


_MISSING = object()


def _register(op: Op) -> None:
    """Record a newly declared op; one name declared in two modules is a mistake worth stopping."""
    old = REGISTRY.get(op.name)
    if old is not None and old.module != op.module:
        raise ValueError(f"op {op.name!r} is declared twice: in {old.module} and in {op.module}; "
                         f"rename one of them")
    REGISTRY[op.name] = op


def _dispatch(op, args, attrs):  # replaced by accel.core.dispatch at import time
    raise RuntimeError("accel.core.dispatch not initialised")


_dispatch_prepared = _dispatch


def install_dispatcher(fn: Callable, prepared: Callable | None = None) -> None:
    """Called by accel.core.dispatch whenever its mode changes: the plain eager functions when no
    interceptor or checked mode is on (one call less per op), else the slow path."""
    global _dispatch, _dispatch_prepared
    _dispatch = fn
    _dispatch_prepared = prepared or fn
