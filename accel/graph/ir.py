"""accel's graph IR: a flat SSA list of op nodes with static shapes and dtypes.

A `Graph` is what `accel.graph.compile` traces a function into and what a backend's `compile(graph)`
turns into a callable. Every value is an integer id with a `TensorSpec`; a value is a graph
input, a constant (a native array captured from a tensor the function closed over), or the
output of exactly one node. Node specs come from each op's `infer` rule, so a graph is checked
by the op declarations while it is built, never by running it.

Composites stay single nodes when traced (so a backend can lower `attention` to its fused
kernel); `accel.graph.trace.lower` expands the ones a backend has no kernel for into primitives.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from accel.core.op import Op
from accel.core.spec import TensorSpec


@dataclass(frozen=True)
class Node:
    """`output = op(*inputs, **attrs)`. `inputs` holds value ids (None for an omitted optional
    input); for a variadic op (concat) the first entry is a tuple of ids."""

    op: Op
    inputs: tuple
    attrs: Mapping[str, Any]
    output: int
    spec: TensorSpec

    def input_ids(self) -> list[int]:
        """Every value id this node reads, flattened (variadic lists included)."""
        out = []
        for i, ref in enumerate(self.inputs):
            if self.op.variadic and i == 0:
                out.extend(ref)
            elif ref is not None:
                out.append(ref)
        return out

    def __str__(self) -> str:
        def show(i, ref):
            if self.op.variadic and i == 0:
                return "[" + ", ".join(f"%{r}" for r in ref) + "]"
            return "None" if ref is None else f"%{ref}"

        args = [show(i, r) for i, r in enumerate(self.inputs)]
        args += [f"{k}={_short(v)}" for k, v in self.attrs.items()]
        return f"%{self.output}: {self.spec} = {self.op.name}({', '.join(args)})"


@dataclass(frozen=True)
class Graph:
    """A traced function. `outputs` are the function's tensor results in order; `mutations` pairs
    an input position with the value that input holds after the call (in-place updates such as
    the KV cache's `index_copy_`), which a compiled call writes back into the caller's tensor."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    nodes: tuple[Node, ...]
    specs: Mapping[int, TensorSpec]
    constants: Mapping[int, Any] = field(default_factory=dict)   # value id -> native array
    mutations: tuple[tuple[int, int], ...] = ()                  # (input position, value id)
    backend: Any = None                                          # the Backend the graph runs on
    name: str = "graph"

    # --- facts -----------------------------------------------------------------------------
    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(self.specs[i] for i in self.inputs)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(self.specs[i] for i in self.outputs)

    @property
    def results(self) -> tuple[int, ...]:
        """What a compiled callable returns: the outputs, then each mutated input's new value."""
        return self.outputs + tuple(v for _, v in self.mutations)

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(node.op.name for node in self.nodes))

    def constant_bytes(self) -> int:
        return sum(self.specs[i].dtype.itemsize * _prod(self.specs[i].shape) for i in self.constants)

    def last_uses(self) -> dict[int, int]:
        """value id -> index of the last node that reads it (results are read after every node)."""
        last: dict[int, int] = {}
        for index, node in enumerate(self.nodes):
            for ref in node.input_ids():
                last[ref] = index
        for ref in self.results:
            last[ref] = len(self.nodes)
        return last

    def __str__(self) -> str:
        lines = [f"graph {self.name}("
                 + ", ".join(f"%{i}: {self.specs[i]}" for i in self.inputs) + ") {"]
        for cid in self.constants:
            lines.append(f"  %{cid}: {self.specs[cid]} = constant")
        lines += [f"  {node}" for node in self.nodes]
        lines.append("  return " + ", ".join(f"%{i}" for i in self.outputs))
        for position, value in self.mutations:
            lines.append(f"  input {position} <- %{value}")
        lines.append("}")
        return "\n".join(lines)


def prune(graph: Graph) -> Graph:
    """Drop nodes and constants whose values reach no result (dead code after tracing)."""
    live = set(graph.results)
    kept = []
    for node in reversed(graph.nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.input_ids())
    kept.reverse()
    constants = {k: v for k, v in graph.constants.items() if k in live}
    used = live | set(graph.inputs)
    specs = {k: s for k, s in graph.specs.items() if k in used}
    return Graph(graph.inputs, graph.outputs, tuple(kept), specs, constants, graph.mutations,
                 graph.backend, graph.name)


def bind_inputs(graph: Graph, values: Mapping[int, Any]) -> Graph:
    """Turn the inputs at the given positions into constants holding `values` (native arrays),
    e.g. to put the weights of a traced model into an exported file. Mutations keep pointing at
    the remaining inputs."""
    keep = [p for p in range(len(graph.inputs)) if p not in values]
    constants = dict(graph.constants)
    for position, native in values.items():
        constants[graph.inputs[position]] = native
    moved = {old: new for new, old in enumerate(keep)}
    mutations = tuple((moved[p], v) for p, v in graph.mutations if p in moved)
    return Graph(tuple(graph.inputs[p] for p in keep), graph.outputs, graph.nodes, graph.specs,
                 constants, mutations, graph.backend, graph.name)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
