"""`accel.compile(fn)`: trace once per input signature, cache, run as one graph.

    step = accel.compile(llama.forward)
    logits = step(params, config, ids, positions, cache)   # traces on the first call only

The signature of a call is: the structure of the arguments (dicts, lists, tuples, objects such as
a KV cache, searched for tensors), every non-tensor leaf (ints, configs: part of the key, so a
changed Python value retraces), each tensor's shape and dtype, and the backend. A new signature
traces `fn` into a `Graph`, lowers the composites the backend has no kernel for, and hands the
graph to `backend.compile(graph)`; a backend that returns None gets the graph interpreter.
Recompiles are counted in `compiled.stats`, logged on the `accel` logger, and warned about once
when a function keeps retracing (usually a shape that changes every call).

Tensors the function updates in place (the KV cache's `index_copy_`) are extra graph results
written back into the caller's Tensor objects after each call, so eager and compiled calls have
the same effect. Tensors the function closes over are constants of the graph, captured when it
is traced: pass anything that changes between calls as an argument.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, Callable

from accel.core import dispatch
from accel.core.backend import Backend
from accel.core.errors import AccelError, BackendError, OpError
from accel.graph.ir import Graph
from accel.core.registry import current_backend, get_backend
from accel.core.spec import TensorSpec
from accel.core.tensor import Tensor
from accel.graph.trace import TraceValue, Tracer, backend_policy, is_traced, lower, run_traced

log = logging.getLogger("accel")

RECOMPILE_WARNING = 8  # traces of one function before a warning (torch.compile's default limit)


@dataclass
class CompileStats:
    """Counters of one compiled function (shared by its cached signatures)."""

    calls: int = 0
    traces: int = 0          # signatures traced; the first is a compile, the rest recompiles
    cache_hits: int = 0
    trace_s: float = 0.0     # time spent tracing, lowering and in backend.compile

    @property
    def recompiles(self) -> int:
        return max(0, self.traces - 1)


@dataclass
class Compiled:
    """One cached signature: its graph and the callable the backend made of it."""

    graph: Graph             # lowered for the backend
    traced: Graph            # as traced (composites kept), e.g. for ONNX export
    run: Callable            # natives -> natives (outputs, then mutated inputs)
    runner: str              # "backend" or "interpreter"
    out_tree: Any            # output structure with ("T", k) / ("in", i) leaves
    calls: int = 0


class CompiledFunction:
    def __init__(self, fn: Callable, backend=None, name: str | None = None):
        self.fn = fn
        self.backend = backend
        self.name = name or getattr(fn, "__name__", "fn")
        self.stats = CompileStats()
        self._cache: dict[Any, Compiled] = {}
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<accel.compile({self.name}): {len(self._cache)} signature(s), {self.stats.calls} calls>"

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        tensors, key, backend = self._signature(args, kwargs)
        entry = self._cache.get(key)
        self.stats.calls += 1
        if entry is None:
            with self._lock:
                entry = self._cache.get(key) or self._compile(key, tensors, backend, args, kwargs)
        else:
            self.stats.cache_hits += 1
        entry.calls += 1
        try:
            results = entry.run(*[t.data for t in tensors])
        except AccelError:
            raise
        except Exception as exc:  # the backend's own error type (XLA, ONNX Runtime, ...)
            raise OpError(f"accel.compile({self.name}) on {backend.spec}: the compiled graph "
                          f"({len(entry.graph.nodes)} nodes, {entry.runner}) failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="run the function without accel.compile to find the failing op; "
                               "print(compiled.signatures()[-1].graph) shows the graph") from exc
        n_out = len(entry.graph.outputs)
        for (position, _), native in zip(entry.graph.mutations, results[n_out:]):
            tensors[position].data = native
        return _unflatten(entry.out_tree, results, tensors, backend)

    def signatures(self) -> list[Compiled]:
        return list(self._cache.values())

    def graph_for(self, *args, lowered: bool = True, **kwargs) -> Graph:
        """The graph this call signature compiles to (traced now if not cached); not run."""
        tensors, key, backend = self._signature(args, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            with self._lock:
                entry = self._compile(key, tensors, backend, args, kwargs)
        return entry.graph if lowered else entry.traced

    # --- signature -------------------------------------------------------------------------
    def _signature(self, args, kwargs):
        tensors: list[Tensor] = []
        index: dict[int, int] = {}
        structure = _flatten((args, kwargs), tensors, index, set())
        backend = self._backend_of(tensors)
        key = (structure, tuple((t.shape, t.dtype) for t in tensors), backend.spec)
        return tensors, key, backend

    def _backend_of(self, tensors) -> Backend:
        if self.backend is not None:
            target = get_backend(self.backend)
        elif tensors:
            target = tensors[0].backend
        else:
            target = current_backend()
        for t in tensors:
            if t.backend is not target:
                raise BackendError(
                    f"accel.compile({self.name}): arguments live on {t.backend.spec} and "
                    f"{target.spec}", hint="move every tensor argument to one backend (tensor.to)")
        return target

    # --- tracing ---------------------------------------------------------------------------
    def _compile(self, key, tensors: list[Tensor], backend: Backend, args, kwargs) -> Compiled:
        start = time.perf_counter()
        traced, out_tree = trace_call(self.fn, tensors, backend, args, kwargs, self.name)
        graph = lower(traced, backend_policy(backend), backend)
        for op_name, n in _decomposed_counts(traced, graph).items():
            dispatch.stats.add(backend.spec, op_name, "decomposed", n)
        run = backend.compile(graph)
        runner = "backend"
        if run is None:
            from accel.graph.interpreter import GraphInterpreter

            run, runner = GraphInterpreter(graph, backend), "interpreter"
        entry = Compiled(graph, traced, run, runner, out_tree)
        self._cache[key] = entry
        self.stats.traces += 1
        self.stats.trace_s += time.perf_counter() - start
        shapes = ", ".join(f"{t.dtype.name}{list(t.shape)}" for t in tensors[:6])
        more = f", ... ({len(tensors)} tensors)" if len(tensors) > 6 else ""
        log.info("accel.compile(%s): traced for %s [%s%s] -> %d nodes, %s (%s #%d, %.3fs)",
                 self.name, backend.spec, shapes, more, len(graph.nodes), runner,
                 "recompile" if self.stats.traces > 1 else "compile", self.stats.traces,
                 time.perf_counter() - start)
        if self.stats.traces == RECOMPILE_WARNING:
            dispatch.stats.warn_once(
                ("recompile", id(self)),
                f"accel.compile({self.name}) has traced {self.stats.traces} signatures; a shape or "
                f"Python argument changes between calls (static KV cache and fixed shapes avoid this)")
        return entry


def trace_call(fn: Callable, tensors: list[Tensor], backend: Backend, args, kwargs, name: str):
    """Trace `fn(*args, **kwargs)` whose tensor leaves are `tensors`: (graph, output structure)."""
    tracer = Tracer(backend, name=name)
    saved = [(t.data, t.backend) for t in tensors]
    placeholders = [tracer.new_input(TensorSpec(tuple(t.shape), t.dtype)) for t in tensors]
    for t, value in zip(tensors, placeholders):
        t.data, t.backend = value, tracer.proxy
    try:
        result = run_traced(tracer, fn, *args, **kwargs)
        out_values: list[int] = []
        out_tree = _flatten_output(result, tensors, tracer, out_values)
        mutations = [(i, t.data.id) for i, (t, p) in enumerate(zip(tensors, placeholders))
                     if t.data is not p and type(t.data) is TraceValue]
        bad = [i for i, (t, p) in enumerate(zip(tensors, placeholders))
               if t.data is not p and type(t.data) is not TraceValue]
        if bad:
            raise OpError(f"accel.compile({name}): input {bad[0]} was rebound to a non-traced "
                          f"array while tracing",
                          hint="update inputs only through accel ops (e.g. Tensor.index_copy_)")
        tracer.check_constants()
    finally:
        for t, (data, owner) in zip(tensors, saved):
            t.data, t.backend = data, owner
    return tracer.graph(out_values, mutations), out_tree


def trace(fn: Callable, *args, backend=None, **kwargs) -> tuple[Graph, list[Tensor]]:
    """The graph of one call of `fn` (composites kept, nothing compiled or run) and the argument
    tensors in the order of the graph's inputs (dicts, lists, objects searched as for compile)."""
    compiled = CompiledFunction(fn, backend)
    tensors, _, target = compiled._signature(args, kwargs)
    graph, _ = trace_call(fn, tensors, target, args, kwargs, compiled.name)
    return graph, tensors


def compile(fn: Callable | None = None, *, backend=None, name: str | None = None):
    """Compile `fn` (a function of accel tensors) per input signature; usable as a decorator."""
    if fn is None:
        return lambda f: CompiledFunction(f, backend, name)
    return CompiledFunction(fn, backend, name)


def _decomposed_counts(traced: Graph, lowered: Graph) -> dict[str, int]:
    kept = lowered.op_counts()
    out = {}
    for op_name, n in traced.op_counts().items():
        node_op = next(node.op for node in traced.nodes if node.op.name == op_name)
        if not node_op.is_primitive and kept.get(op_name, 0) < n:
            out[op_name] = n - kept.get(op_name, 0)
    return out


# --- pytrees -------------------------------------------------------------------------------
_STATIC_TYPES = (type(None), bool, int, float, complex, str, bytes)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, functools.partial)


def _flatten(obj, tensors: list, index: dict, seen: set):
    """A hashable description of `obj` with its tensors replaced by their positions."""
    if isinstance(obj, Tensor):
        i = index.get(id(obj))
        if i is None:
            i = index[id(obj)] = len(tensors)
            tensors.append(obj)
        return ("T", i)
    kind = type(obj)
    if kind in _STATIC_TYPES:
        return obj
    if kind is list or kind is tuple:
        return (kind.__name__, tuple(_flatten(x, tensors, index, seen) for x in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, _flatten(v, tensors, index, seen)) for k, v in obj.items()))
    if isinstance(obj, Backend):
        return ("backend", obj.spec)
    if hasattr(obj, "__dict__") and not isinstance(obj, _OPAQUE):
        if id(obj) in seen:
            return ("cycle", type(obj).__qualname__)
        seen.add(id(obj))
        try:
            return (type(obj), tuple((k, _flatten(v, tensors, index, seen))
                                     for k, v in vars(obj).items()))
        finally:
            seen.discard(id(obj))
    try:
        hash(obj)
    except TypeError:
        raise OpError(f"accel.graph.compile: cannot use an argument of type {type(obj).__name__} "
                      f"({obj!r:.60}) in a compile signature",
                      hint="pass tensors, Python numbers/strings, tuples/lists/dicts of them, or "
                           "hashable objects") from None
    return obj


def _flatten_output(result, inputs: list[Tensor], tracer: Tracer, values: list[int]):
    if isinstance(result, Tensor):
        for i, t in enumerate(inputs):
            if result is t:
                return ("in", i)
        if is_traced(result):
            values.append(result.data.id)
        else:
            values.append(tracer.ref(result, _OUTPUT))
        return ("T", len(values) - 1)
    if type(result) in (list, tuple):
        return (type(result), [_flatten_output(x, inputs, tracer, values) for x in result])
    if isinstance(result, dict):
        return (dict, {k: _flatten_output(v, inputs, tracer, values) for k, v in result.items()})
    return ("static", result)


def _unflatten(tree, results: list, inputs: list[Tensor], backend: Backend):
    tag = tree[0]
    if tag == "T":
        return Tensor(results[tree[1]], backend)
    if tag == "in":
        return inputs[tree[1]]
    if tag == "static":
        return tree[1]
    if tag is dict:
        return {k: _unflatten(v, results, inputs, backend) for k, v in tree[1].items()}
    return tag(_unflatten(v, results, inputs, backend) for v in tree[1])


class _Output:
    name = "output"


_OUTPUT = _Output()

__all__ = ["compile", "trace", "CompiledFunction", "CompileStats"]
