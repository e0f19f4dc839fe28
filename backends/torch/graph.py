"""`TorchBackend.compile`: an accel graph becomes one generated Python function of torch calls,
optionally handed to `torch.compile` (inductor), and on CUDA replayed as a CUDA graph.

Three modes, chosen per backend (`TorchBackend.set_graph_compiler`, or `ACCEL_TORCH_COMPILE`):

- ``"python"`` (default): straight-line Python source, one line per node calling the backend's
  own torch kernel with its attributes bound, values deleted after their last use. No dispatch,
  promotion, rule checks or Tensor wrapping per op, and readable (`run.source`). Compiles in
  milliseconds, so it is the default for `LlamaModel.compile()` and `accel generate --compile`.
- ``"inductor"``: the same function through `torch.compile(dynamic=False)`; dynamo traces the
  kernels into one FX graph and inductor fuses it into C++/OpenMP (CPU) or Triton (CUDA). Costs
  tens of seconds per signature on a small CPU; pays off on long decode runs and training steps.

On CUDA a graph's second call (the first that repeats a signature: a decode step) is captured
with `torch.cuda.CUDAGraph` and every later call replays it (`cuda_graphs`, on by default there):
one launch per step instead of one per kernel. The static KV cache is what makes this possible;
see `CudaGraphReplay`.

Kernels that read values on the host (index bounds checks, the CPU attention's causal-prefix
check, cross_entropy's target check on a device) are replaced in compiled graphs by versions
that do not (`COMPILED_OVERRIDES`, as jax's `TRACED_OVERRIDES`): a host read would split
dynamo's graph and cannot run inside a CUDA-graph capture. Indices are wrapped like numpy's but
not checked; validate ids that come from outside before a compiled call (docs/compile.md).
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch

from accel import ops
from accel.backends.torch.dtypes import F8, TORCH_DTYPES, cast_to, rounded, up
from accel.backends.torch.primitives import index_add_unchecked
from accel.core.errors import BackendError
from accel.graph.ir import Graph

MODES = ("python", "inductor")
DEFAULT_MODE = "python"


def mode_from_env() -> str:
    mode = os.environ.get("ACCEL_TORCH_COMPILE", "") or DEFAULT_MODE
    return check_mode(mode)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BackendError(f"unknown torch graph compiler mode {mode!r}",
                           hint=f"use one of {', '.join(MODES)} (ACCEL_TORCH_COMPILE or "
                                f"TorchBackend.set_graph_compiler)")
    return mode


# --- kernels without host reads ------------------------------------------------------------
def _wrapped(index: torch.Tensor, n: int) -> torch.Tensor:
    index = index.to(torch.int64)
    return torch.where(index < 0, index + n, index)


def gather_unchecked(x, indices, *, axis=0):
    shape = tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:])
    idx = _wrapped(indices, x.shape[axis]).reshape(-1)
    return torch.index_select(x, axis, idx).reshape(shape)


def embedding_unchecked(weight, ids):
    return gather_unchecked(weight, ids, axis=0)


def index_copy_unchecked_(x, index, values, *, axis=0):
    idx = _wrapped(index, x.shape[axis])
    if x.dtype in F8:  # no float8 index_copy kernel: move the bytes (exact)
        x.view(torch.uint8).index_copy_(axis, idx, values.view(torch.uint8))
    else:
        x.index_copy_(axis, idx, values)
    return x


def index_copy_unchecked(x, index, values, *, axis=0):
    return index_copy_unchecked_(x.clone(), index, values, axis=axis)


def index_add_compiled(x, index, values, *, axis=0):
    return index_add_unchecked(x, _wrapped(index, x.shape[axis]), values, axis=axis)


def cross_entropy_unchecked(logits, targets, *, ignore_index=-100, reduction="mean"):
    """The eager kernel without its host check of the targets (torch's own CPU kernel still
    checks them; on a device a bad target is a device-side assert: validate before the call)."""
    classes = logits.shape[-1]
    out = torch.nn.functional.cross_entropy(up(logits).reshape(-1, classes),
                                            targets.reshape(-1).to(torch.int64),
                                            ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        out = out.reshape(targets.shape)
    return rounded(out, logits.dtype)


def compiled_kernels(table: dict) -> dict:
    """The backend's kernel table with the host-reading kernels replaced (see the module doc)."""
    out = dict(table)
    out[ops.gather] = gather_unchecked
    out[ops.index_copy] = index_copy_unchecked
    out[ops.index_add] = index_add_compiled
    if ops.embedding in table:
        out[ops.embedding] = embedding_unchecked
    if ops.cross_entropy in table:
        out[ops.cross_entropy] = cross_entropy_unchecked
    return out


# --- code generation -----------------------------------------------------------------------
class GeneratedGraph:
    """A graph as a Python function of torch tensors: `fn(*inputs, *constants) -> results`."""

    def __init__(self, backend, graph: Graph, kernels: dict, inplace: Callable):
        self.graph = graph
        names: dict[int, str] = {}
        params = []
        for i, vid in enumerate(graph.inputs):
            names[vid] = f"in{i}"
            params.append(names[vid])
        self.constants: list = []
        for vid, native in graph.constants.items():
            names[vid] = f"c{len(self.constants)}"
            params.append(names[vid])
            self.constants.append(native)
        donated = {graph.inputs[p]: p for p, _ in graph.mutations}
        last = graph.last_uses()
        keep = set(graph.results) | set(graph.constants) | set(graph.inputs)
        env: dict = {}
        lines = []
        for index, node in enumerate(graph.nodes):
            out = names[node.output] = f"v{node.output}"
            kernel = kernels[node.op]
            if node.op is ops.index_copy and node.inputs[0] in donated and last.get(node.inputs[0]) == index:
                kernel = inplace  # the KV cache: written in place, never copied
            if not node.inputs and node.op in (ops.full, ops.arange):
                # static creation: made once now (the eager kernel, numpy's rounding for arange)
                names[node.output] = f"c{len(self.constants)}"
                params.append(names[node.output])
                self.constants.append(kernel(**node.attrs))
                continue
            attrs = dict(node.attrs)
            if node.op is ops.cast and kernel is backend.kernels.get(ops.cast):
                # bound to the torch dtype: dynamo cannot look accel dtypes up in a dict
                kernel = functools.partial(cast_to, target=TORCH_DTYPES[attrs.pop("dtype")],
                                           saturate=attrs.pop("saturate", False))
            k = f"k{index}"
            env[k] = kernel
            args = []
            for i, ref in enumerate(node.inputs):
                if node.op.variadic and i == 0:
                    args.append("[" + ", ".join(names[r] for r in ref) + "]")
                else:
                    args.append("None" if ref is None else names[ref])
            if attrs:
                env[f"a{index}"] = attrs
                args.append(f"**a{index}")
            lines.append(f"    {out} = {k}({', '.join(args)})  # {node.op.name} -> {node.spec}")
            dead = sorted({names[r] for r in node.input_ids()
                           if last.get(r) == index and r not in keep})
            if dead:
                lines.append(f"    del {', '.join(dead)}")
        lines.append(f"    return ({''.join(names[r] + ', ' for r in graph.results)})")
        name = "".join(c if c.isalnum() else "_" for c in graph.name) or "graph"
        self.source = f"def {name}({', '.join(params)}):\n" + "\n".join(lines) + "\n"
        exec(compile(self.source, f"<accel graph {graph.name} on {backend.spec}>", "exec"), env)
        self.fn = env[name]

    def __call__(self, *natives):
        return self.fn(*natives, *self.constants)


# --- CUDA graphs ----------------------------------------------------------------------------
STATIC_INPUT_BYTES = 1 << 20  # inputs larger than this (weights, KV caches) are used in place


class CudaGraphReplay:
    """Replays a graph's kernels as one CUDA graph from its second call on.

    Small inputs (ids, positions) are copied into static buffers before each replay. Large ones
    (weights, the KV cache) are captured in place: the graph reads their memory directly, so a
    call must pass the same tensors; when it does not (a new KV cache for a new request), the
    graph is captured again for the new buffers (`recaptures`). A mutated input (the KV cache)
    is written in place and handed back as its own new value, so the caller's next call passes
    that same buffer. Outputs are cloned out of the graph's pool (the next replay overwrites it).
    """

    def __init__(self, fn: Callable, graph: Graph, device):
        self.fn = fn
        self.device = device
        self.n_outputs = len(graph.outputs)
        self.big = [spec.dtype.itemsize * _numel(spec.shape) > STATIC_INPUT_BYTES
                    for spec in graph.input_specs]
        self.calls = 0
        self.replays = 0
        self.recaptures = 0
        self._cuda_graph = None
        self._key = None

    def __call__(self, *natives):
        self.calls += 1
        if self.calls < 2 or torch.is_grad_enabled() and any(n.requires_grad for n in natives):
            return list(self.fn(*natives))
        key = tuple(n.data_ptr() if big else None for n, big in zip(natives, self.big))
        if self._cuda_graph is None or key != self._key:
            if self._cuda_graph is not None:
                self.recaptures += 1
            self._capture(natives, key)
        for static, native, big in zip(self._inputs, natives, self.big):
            if not big:
                static.copy_(native)
        self._cuda_graph.replay()
        self.replays += 1
        outs = [o.clone() for o in self._outputs[:self.n_outputs]]
        return outs + list(self._outputs[self.n_outputs:])

    def _capture(self, natives, key) -> None:
        self._inputs = [n if big else n.clone() for n, big in zip(natives, self.big)]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lazy inits and allocator pools outside the capture
                self.fn(*self._inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            self._outputs = list(self.fn(*self._inputs))
        self._cuda_graph, self._key = cuda_graph, key


def _checked_inplace(kernel: Callable) -> Callable:
    """The eager in-place index_copy (bounds checked on the host) returning its target."""
    def index_copy_(x, index, values, *, axis=0):
        kernel(x, index, values, axis=axis)
        return x
    return index_copy_


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- the backend hook ------------------------------------------------------------------------
def compile_graph(backend, graph: Graph, mode: str, cuda_graphs: bool) -> Callable | None:
    unchecked = mode != "python" or (cuda_graphs and backend.device_type == "cuda")
    table = compiled_kernels(backend.kernels) if unchecked else backend.kernels
    for node in graph.nodes:
        if node.op not in table:
            return None  # the interpreter runs it, with host fallbacks counted per call
        first = (node.inputs[0][:1] or (None,))[0] if node.op.variadic else (node.inputs[0] if node.inputs else None)
        dtype = graph.specs[first].dtype if first is not None else node.attrs.get("dtype")
        if dtype is not None and not backend.supports(node.op, dtype):
            return None
    inplace = index_copy_unchecked_ if unchecked else _checked_inplace(backend.inplace_kernels[ops.index_copy])
    generated = GeneratedGraph(backend, graph, table, inplace)
    run: Callable = generated
    if mode == "inductor":
        # ACCEL_TORCH_DYNAMO_BACKEND=eager / aot_eager: dynamo without inductor, to find graph
        # breaks or numeric differences quickly
        dynamo_backend = os.environ.get("ACCEL_TORCH_DYNAMO_BACKEND", "inductor")
        compiled_fn = torch.compile(generated.fn, backend=dynamo_backend, dynamic=False, fullgraph=False)
        constants = generated.constants

        def run(*natives):
            return compiled_fn(*natives, *constants)
        run.compiled = compiled_fn
    if cuda_graphs and backend.device_type == "cuda":
        run = CudaGraphReplay(run, graph, backend.torch_device)
    run.source = generated.source
    run.mode = mode
    return run


__all__ = ["compile_graph", "GeneratedGraph", "CudaGraphReplay", "MODES", "compiled_kernels"]
