"""Tracing: run a function once on placeholder tensors and record the op calls as a `Graph`.

Recording goes through the dispatcher's interceptor hook (`accel.core.dispatch.push_interceptor`),
so model code runs unchanged. A traced tensor is an ordinary `accel.Tensor` whose `data` is a
`TraceValue` (id, shape, dtype) and whose `backend` is a `TracingBackend` standing in for the
real one; tensors that are not traced (weights the function closes over, scalars that `prepare`
turned into tensors) become graph constants. Reading a traced tensor's value (`.item()`,
`bool(t)`, `.numpy()`) raises: value-dependent Python control flow cannot be traced.

The caller's input tensors are swapped to placeholders while the function runs and restored
afterwards, so inputs may sit anywhere in the arguments (dicts, lists, a KV cache object), and an
in-place update (`Tensor.index_copy_`, which rebinds `tensor.data`) shows up as a new value for
that input: a mutation the compiled call writes back. Tracing is not thread-safe (the
dispatcher's interceptor list is process-wide).
"""
from __future__ import annotations

from typing import Callable

from accel.core import dispatch
from accel.core.backend import Backend
from accel.core.errors import AccelError, BackendError, OpError
from accel.graph.ir import Graph, Node, prune
from accel.core.op import Op
from accel.core.spec import TensorSpec, describe
from accel.core.tensor import Tensor

# policy(op, args, attrs) -> True to expand a composite into its decomposition now.
ExpandPolicy = Callable[[Op, tuple, dict], bool]


class TraceValue:
    """The `data` of a traced tensor: a value id with a static shape and dtype."""

    __slots__ = ("id", "shape", "dtype")

    def __init__(self, value_id: int, spec: TensorSpec):
        self.id = value_id
        self.shape = tuple(spec.shape)
        self.dtype = spec.dtype

    def __repr__(self) -> str:
        return f"<traced %{self.id} {self.dtype.name}{list(self.shape)}>"


class TracingBackend(Backend):
    """Stands in for the real backend while tracing: traced tensors point at it."""

    name = "tracing"
    kernels: dict = {}
    inplace_kernels: dict = {}

    def __init__(self, real: Backend):
        self.real = real
        self.device = real.device
        self._resolved = {}

    @property
    def spec(self) -> str:
        return self.real.spec

    def __repr__(self) -> str:
        return f"<accel backend {self.real.spec} (tracing)>"

    def dtype_of(self, native):
        if type(native) is TraceValue:
            return native.dtype
        return self.real.dtype_of(native)

    def from_numpy(self, array):
        return self.real.from_numpy(array)

    def scalar(self, value, dtype):
        return self.real.scalar(value, dtype)

    def to_numpy(self, native):
        if type(native) is TraceValue:
            raise OpError(
                f"cannot read the value of traced tensor {native.dtype.name}{list(native.shape)} "
                f"inside accel.compile (on {self.real.spec})",
                hint="a compiled function must not branch on or print tensor values; move that "
                     "logic outside the compiled function, or pass the value as a Python number "
                     "(it becomes part of the compile signature)")
        return self.real.to_numpy(native)

    def synchronize(self) -> None:
        pass


def is_traced(t) -> bool:
    return isinstance(t, Tensor) and type(t.data) is TraceValue


def keep_all(op: Op, args: tuple, attrs: dict) -> bool:
    """Trace-time policy: every composite stays one node."""
    return False


def expand_all(op: Op, args: tuple, attrs: dict) -> bool:
    return True


def backend_policy(backend: Backend) -> ExpandPolicy:
    """Expand a composite unless `backend` runs it natively in the first input's dtype."""
    def expand(op, args, attrs):
        if op not in backend.kernels:
            return True
        dtype = first_dtype(op, args, attrs)
        return dtype is not None and not backend.supports(op, dtype)
    return expand


def first_dtype(op: Op, args: tuple, attrs: dict):
    """The dtype the dispatcher's dtype guard looks at: the first input's, else attrs['dtype']."""
    first = args[0][0] if op.variadic and args and args[0] else (args[0] if args else None)
    if isinstance(first, Tensor):
        return first.dtype
    return attrs.get("dtype")


class Tracer:
    """The interceptor that records op calls into a graph under construction."""

    def __init__(self, backend: Backend, policy: ExpandPolicy = keep_all, name: str = "graph"):
        if isinstance(backend, TracingBackend):
            backend = backend.real
        self.real = backend
        self.proxy = TracingBackend(backend)
        self.policy = policy
        self.name = name
        self.specs: dict[int, TensorSpec] = {}
        self.nodes: list[Node] = []
        self.constants: dict[int, object] = {}
        self._constant_ids: dict[int, int] = {}      # id(native array) -> value id
        self._constant_tensors: list[Tensor] = []   # keeps captured tensors alive, checked after
        self.inputs: list[int] = []
        self.decomposed: dict[str, int] = {}

    # --- values ----------------------------------------------------------------------------
    def _new_id(self, spec: TensorSpec) -> int:
        value_id = len(self.specs)
        self.specs[value_id] = spec
        return value_id

    def new_input(self, spec: TensorSpec) -> TraceValue:
        value = TraceValue(self._new_id(spec), spec)
        self.inputs.append(value.id)
        return value

    def input_tensor(self, spec: TensorSpec) -> Tensor:
        return Tensor(self.new_input(spec), self.proxy)

    def ref(self, t: Tensor, op: Op) -> int:
        """The value id of an op argument: a traced value, or a constant captured now."""
        if type(t.data) is TraceValue:
            return t.data.id
        real = t.backend.real if isinstance(t.backend, TracingBackend) else t.backend
        if real is not self.real:
            raise BackendError(
                f"{op.name}: a compiled function for {self.real.spec} uses a tensor on {real.spec} "
                f"({describe(t)})", hint="move it to the compiled function's backend first (tensor.to)")
        key = id(t.data)
        found = self._constant_ids.get(key)
        if found is None:
            found = self._new_id(TensorSpec(tuple(t.shape), t.dtype))
            self.constants[found] = t.data
            self._constant_ids[key] = found
            self._constant_tensors.append((t, t.data))
        return found

    # --- the interceptor -------------------------------------------------------------------
    def involves(self, op: Op, args: tuple, attrs: dict) -> bool:
        tensors = (*args[0], *args[1:]) if op.variadic and args else args
        for a in tensors:
            if isinstance(a, Tensor) and isinstance(a.backend, TracingBackend):
                return True
        return isinstance(attrs.get("backend"), TracingBackend)

    def __call__(self, op: Op, args: tuple, attrs: dict):
        if not self.involves(op, args, attrs):
            return NotImplemented  # only untraced tensors: runs eagerly, becomes a constant
        args, attrs = dispatch.prepared(op, args, attrs)
        return self.emit(op, args, attrs)

    def emit(self, op: Op, args: tuple, attrs: dict) -> Tensor:
        """Record `op(*args, **attrs)` (arguments already prepared), or expand it."""
        if "backend" in op.attrs:
            if not op.is_primitive:  # random_*: drawn on the host now, a constant of the graph
                out = op.decompose(*args, **{**attrs, "backend": self.real})
                return out
            attrs = {k: v for k, v in attrs.items() if k != "backend"}
        if not op.is_primitive and self.policy(op, args, attrs):
            self.decomposed[op.name] = self.decomposed.get(op.name, 0) + 1
            if "backend" in op.attrs:
                attrs = {**attrs, "backend": self.proxy}
            return op.decompose(*args, **attrs)
        try:
            spec = op.infer(*args, **attrs)
        except AccelError as error:
            raise dispatch.explain(op, self.real, args, attrs, error) from None
        if op.variadic:
            refs = (tuple(self.ref(t, op) for t in args[0]),
                    *[None if a is None else self.ref(a, op) for a in args[1:]])
        else:
            refs = tuple(None if a is None else self.ref(self._tensor(a, op), op) for a in args)
        out = self._new_id(spec)
        self.nodes.append(Node(op, refs, dict(attrs), out, spec))
        return Tensor(TraceValue(out, spec), self.proxy)

    @staticmethod
    def _tensor(a, op: Op) -> Tensor:
        if not isinstance(a, Tensor):
            raise OpError(f"{op.name}: expected accel.Tensor inputs while tracing, got "
                          f"{type(a).__name__} ({describe(a)})",
                          hint="wrap host data with accel.tensor(data, backend=...)")
        return a

    def graph(self, outputs, mutations=()) -> Graph:
        return prune(Graph(tuple(self.inputs), tuple(outputs), tuple(self.nodes), dict(self.specs),
                           dict(self.constants), tuple(mutations), self.real, self.name))

    def check_constants(self) -> None:
        """A captured tensor that the function updated in place cannot be written back."""
        for t, original in self._constant_tensors:
            if type(t.data) is TraceValue:
                traced, t.data = t.data, original  # leave the caller's tensor usable
                raise OpError(
                    f"accel.graph.compile: the function updates a tensor in place ({traced.dtype.name}"
                    f"{list(traced.shape)}) that is not one of its arguments",
                    hint="pass the tensor (e.g. the KV cache) as an argument so the update can be "
                         "written back after each compiled call")


def run_traced(tracer: Tracer, fn: Callable, *args, **kwargs):
    dispatch.push_interceptor(tracer)
    try:
        return fn(*args, **kwargs)
    finally:
        dispatch.pop_interceptor(tracer)


def lower(graph: Graph, policy: ExpandPolicy, backend: Backend | None = None) -> Graph:
    """Re-trace `graph`, expanding the composites `policy` selects into their decompositions."""
    backend = backend or graph.backend
    tracer = Tracer(backend, policy, graph.name)
    env: dict[int, Tensor] = {}
    for value_id in graph.inputs:
        env[value_id] = tracer.input_tensor(graph.specs[value_id])
    for value_id, native in graph.constants.items():
        env[value_id] = Tensor(native, backend)

    def arg(i, ref, node):
        if node.op.variadic and i == 0:
            return [env[r] for r in ref]
        return None if ref is None else env[ref]

    dispatch.push_interceptor(tracer)
    try:
        for node in graph.nodes:
            args = tuple(arg(i, r, node) for i, r in enumerate(node.inputs))
            env[node.output] = tracer.emit(node.op, args, dict(node.attrs))
    finally:
        dispatch.pop_interceptor(tracer)
    outputs = [tracer.ref(env[v], _IDENTITY) if not is_traced(env[v]) else env[v].data.id
               for v in graph.outputs]
    mutations = [(p, tracer.ref(env[v], _IDENTITY) if not is_traced(env[v]) else env[v].data.id)
                 for p, v in graph.mutations]
    lowered = tracer.graph(outputs, mutations)
    object.__setattr__(lowered, "name", graph.name)
    return lowered


class _Identity:  # stands in for an op in error messages about graph outputs
    name = "output"


_IDENTITY = _Identity()
