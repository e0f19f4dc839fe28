"""`JaxBackend.compile`: one `jax.jit` of a function that walks an accel graph.

The graph's shapes are static, so the walk runs once, while jax traces it, and XLA compiles the
whole step as one program. Constants are passed as arguments rather than closed over (XLA would
otherwise embed and constant-fold every weight the function closed over). Inputs the graph
updates in place are donated, so XLA may reuse their buffers for the new values.
"""
from __future__ import annotations

import warnings

import jax

from accel.backends.jax.kernels import KERNELS, TRACED_OVERRIDES
from accel.graph.ir import Graph


def jit_graph(backend, graph: Graph):
    table = {**KERNELS, **TRACED_OVERRIDES}
    for node in graph.nodes:
        if node.op not in table or not backend.supports(node.op):
            return None  # the interpreter runs it, with host fallbacks counted per call
    constant_ids = list(graph.constants)
    constants = [graph.constants[c] for c in constant_ids]
    n_inputs = len(graph.inputs)
    # creation kernels place on the backend's device (the dispatcher passes it eagerly)
    steps = [(table[node.op], node.op.variadic, node.inputs,
              dict(node.attrs) if node.op.inputs else {**node.attrs, "device": backend.device}, node.output)
             for node in graph.nodes]
    results = graph.results

    def run(*arrays):
        env = dict(zip(graph.inputs, arrays[:n_inputs]))
        env.update(zip(constant_ids, arrays[n_inputs:]))
        for kernel, variadic, refs, attrs, out in steps:
            args = [([env[r] for r in ref] if variadic and i == 0 else
                     (None if ref is None else env[ref])) for i, ref in enumerate(refs)]
            env[out] = kernel(*args, **attrs)
        return tuple(env[r] for r in results)

    donate = tuple(sorted({p for p, _ in graph.mutations}))
    jitted = jax.jit(run, donate_argnums=donate)
    plain = jax.jit(run) if donate else jitted

    def call(*natives):
        fn = jitted
        if donate:
            donated = {id(natives[p]) for p in donate}
            others = [id(n) for i, n in enumerate(natives) if i not in donate] + [id(c) for c in constants]
            if len(donated) < len(donate) or donated.intersection(others):
                fn = plain  # an aliased buffer must not be donated
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
            return list(fn(*natives, *constants))

    call.jitted = jitted
    return call
