"""The graph interpreter: what a backend without a graph compiler runs (numpy, npusim, ...).

Built once per graph: every node becomes a (kernel, argument slots, attrs, output slot) step with
the kernel already chosen from the node's static dtypes, so a call is one loop over native arrays
with no per-op dispatch, promotion or Tensor wrapping. A node the backend cannot run natively
(no kernel, or not in that dtype) becomes a host-fallback step, counted in
`accel.core.dispatch.stats` on every call like an eager fallback (and refused in strict mode).

Values are dropped after their last use so peak memory stays close to eager execution, and an
`index_copy` that updates a mutated input (the KV cache) whose old value nobody reads afterwards
runs the backend's in-place kernel instead of copying the whole buffer.
"""
from __future__ import annotations

import functools
from typing import Callable

from accel.core import dispatch
from accel.core.backend import Backend
from accel.core.errors import AccelError, OpError
from accel.graph.ir import Graph, Node
from accel.ops import index_copy
from accel.core.tensor import Tensor


class GraphInterpreter:
    def __init__(self, graph: Graph, backend: Backend | None = None):
        self.graph = graph
        self.backend = backend or graph.backend
        slots = {value_id: i for i, value_id in enumerate(graph.specs)}
        self._slots = slots
        template: list = [None] * len(slots)
        for value_id, native in graph.constants.items():
            template[slots[value_id]] = native
        self._template = template
        self._inputs = [slots[v] for v in graph.inputs]
        self._results = [slots[v] for v in graph.results]
        last = graph.last_uses()
        donated = {graph.inputs[p] for p, _ in graph.mutations}
        keep = set(graph.results) | set(graph.constants)
        self.fallback_nodes: list[str] = []
        self.inplace_nodes = 0
        steps = []
        for index, node in enumerate(graph.nodes):
            fn = self._kernel_for(node, index, last, donated)
            args = tuple(self._arg_slot(i, ref, node) for i, ref in enumerate(node.inputs))
            frees = tuple(slots[r] for r in set(node.input_ids())
                          if last.get(r) == index and r not in keep)
            steps.append((fn, args, node.attrs, slots[node.output], frees))
        self._steps = steps

    def _arg_slot(self, i, ref, node: Node):
        if node.op.variadic and i == 0:
            return tuple(self._slots[r] for r in ref)
        return None if ref is None else self._slots[ref]

    # --- kernel selection, once per node ---------------------------------------------------
    def _kernel_for(self, node: Node, index: int, last: dict, donated: set) -> Callable:
        backend, op = self.backend, node.op
        kernel = backend.kernels.get(op)
        refused = kernel is not None and dispatch.refusal(backend, op, self._input_dtypes(node),
                                                          self.graph.specs[node.output].dtype)
        if kernel is not None and not refused:
            if not op.inputs:  # creation kernels place on the backend's device
                return functools.partial(kernel, device=backend.device)
            if op is index_copy:
                target = node.inputs[0]
                inplace = backend.inplace_kernels.get(index_copy)
                if inplace is not None and target in donated and last.get(target) == index:
                    self.inplace_nodes += 1
                    return _inplace_step(inplace, kernel)
            return kernel
        if not op.is_primitive:
            raise OpError(f"compiled graph node {node} reached the interpreter unexpanded on "
                          f"{backend.spec}", hint="lower the graph with accel.graph.trace.lower first "
                                                  "(accel.compile does this)")
        reason = "the backend has no kernel for it" if kernel is None else refused
        self.fallback_nodes.append(op.name)
        return _fallback_step(backend, node, reason)

    def _input_dtypes(self, node: Node) -> list:
        """(dtype, carries data) per tensor input, as the dispatcher judges a call."""
        specs = self.graph.specs
        if node.op.variadic:
            return [(specs[r].dtype, True) for r in node.inputs[0]] + [
                (None if r is None else specs[r].dtype, d) for r, d in zip(node.inputs[1:], node.op.data_inputs[1:])]
        return [(None if r is None else specs[r].dtype, d) for r, d in zip(node.inputs, node.op.data_inputs)]

    # --- the call --------------------------------------------------------------------------
    def __call__(self, *natives) -> list:
        env = self._template.copy()
        for slot, native in zip(self._inputs, natives):
            env[slot] = native
        step = None
        try:
            for step in self._steps:
                fn, args, attrs, out, frees = step
                env[out] = fn(*[_get(env, a) for a in args], **attrs)
                for slot in frees:
                    env[slot] = None
        except AccelError:
            raise
        except Exception as exc:
            raise self._explain(step, exc) from exc
        return [env[slot] for slot in self._results]

    def _explain(self, step, exc: Exception) -> AccelError:
        index = self._steps.index(step) if step is not None else -1
        node = self.graph.nodes[index]
        args = ", ".join(str(self.graph.specs[r]) for r in node.input_ids())
        return OpError(f"compiled graph {self.graph.name!r}, node #{index} {node.op.name}({args}) on "
                       f"{self.backend.spec} failed: {type(exc).__name__}: {exc}",
                       hint="run the function eagerly (without accel.compile) to see the failing "
                            "call with its Python stack; ACCEL_CHECKED=1 validates every op")


def _get(env: list, slot):
    if slot is None:
        return None
    if type(slot) is tuple:
        return [env[s] for s in slot]
    return env[slot]


def _inplace_step(inplace: Callable, functional: Callable) -> Callable:
    def run(x, index, values, *, axis=0):
        try:
            inplace(x, index, values, axis=axis)
            return x
        except (ValueError, TypeError):  # a read-only or broadcast view: copy instead
            return functional(x, index, values, axis=axis)
    return run


def _fallback_step(backend: Backend, node: Node, reason: str) -> Callable:
    op = node.op

    def run(*natives, **attrs):
        if op.variadic:
            args = ([Tensor(n, backend) for n in natives[0]],
                    *[None if n is None else Tensor(n, backend) for n in natives[1:]])
        else:
            args = tuple(None if n is None else Tensor(n, backend) for n in natives)
        if "backend" in op.attrs:
            attrs = {**attrs, "backend": backend}
        return dispatch.host_fallback(backend, op, args, attrs, reason=reason).data
    return run


__all__ = ["GraphInterpreter"]
