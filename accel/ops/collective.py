"""Collectives: all_reduce, reduce_scatter, all_gather and broadcast across the ranks of a job.

Declared here like every other op (signature, shape/dtype rule, numpy reference, cases). They run
in `accel.distributed` — torch.distributed is the engine — which installs itself as their
implementation when a process group is up (`ENGINE`); until then the job has one rank and
each collective is what its reference says for one rank (the identity). Their decomposition is
that engine path, counted by the dispatcher like any decomposition; a vendor backend may register
a native kernel for a collective (its own library) and it then runs instead.

The references take every rank's input (`ACROSS_RANKS`): the cross-process conformance check
(`accel.distributed.conformance`) compares each rank's result with them in float64.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import DTypeError, OpError, ShapeError
from accel.core.op import COMPOSITE, Op
from accel.ops._rules import spec

REDUCE_OPS = ("sum", "mean", "max")
SCATTER_REDUCE_OPS = ("sum", "mean")



class EngineSlot:
    """Where accel.distributed installs the collectives' implementation while a process group
    is up: a callable (op name, x, attrs) -> Tensor with a `world_size` attribute."""

    def __init__(self):
        self.engine = None

    def install(self, engine) -> None:
        self.engine = engine


ENGINE = EngineSlot()


def _world_size() -> int:
    engine = ENGINE.engine
    return 1 if engine is None else engine.world_size


# --- references over every rank's input (numpy float64) -----------------------------------------
def _reduce(inputs, op: str) -> np.ndarray:
    stack = np.stack([np.asarray(x, dtype=np.float64) for x in inputs])
    if op == "sum":
        return stack.sum(axis=0)
    if op == "mean":
        return stack.mean(axis=0)
    return stack.max(axis=0)


def all_reduce_reference(inputs: list, rank: int, *, op: str = "sum") -> np.ndarray:
    return _reduce(inputs, op)


def reduce_scatter_reference(inputs: list, rank: int, *, op: str = "sum") -> np.ndarray:
    reduced = _reduce(inputs, op)
    return np.split(reduced, len(inputs), axis=0)[rank]


def all_gather_reference(inputs: list, rank: int) -> np.ndarray:
    return np.concatenate([np.asarray(x) for x in inputs], axis=0)


def broadcast_reference(inputs: list, rank: int, *, src: int = 0) -> np.ndarray:
    return np.asarray(inputs[src])


ACROSS_RANKS: dict[str, Callable] = {
    "all_reduce": all_reduce_reference, "reduce_scatter": reduce_scatter_reference,
    "all_gather": all_gather_reference, "broadcast": broadcast_reference,
}


# --- shape/dtype rules ------------------------------------------------------------------------
def _check_reduce(x, op: str, allowed: tuple[str, ...], name: str) -> None:
    if op not in allowed:
        raise OpError(f"{name}: unknown reduction op={op!r}", hint=f"use one of {', '.join(allowed)}")
    if x.dtype is dt.bool_:
        raise DTypeError(f"{name} of a bool tensor is not defined", hint="cast to int32 first")
    if op == "mean" and not x.dtype.is_floating:
        raise DTypeError(f"{name}(op='mean') needs a floating input, got {x.dtype.name}",
                         hint="cast to float32 first, or reduce with op='sum'")


def _leading_axis(x, name: str):
    if x.ndim == 0:
        raise ShapeError(f"{name} works along axis 0; a 0-d tensor has none",
                         hint="reshape it to (1,) first")


def _all_reduce_infer(x, *, op="sum"):
    _check_reduce(x, op, REDUCE_OPS, "all_reduce")
    return spec(x.shape, x.dtype)


def _reduce_scatter_infer(x, *, op="sum"):
    _check_reduce(x, op, SCATTER_REDUCE_OPS, "reduce_scatter")
    _leading_axis(x, "reduce_scatter")
    world = _world_size()
    if x.shape[0] % world:
        raise ShapeError(f"reduce_scatter: axis 0 of shape {list(x.shape)} does not divide among "
                         f"{world} ranks", hint=f"pad axis 0 to a multiple of {world}")
    return spec((x.shape[0] // world, *x.shape[1:]), x.dtype)


def _all_gather_infer(x):
    _leading_axis(x, "all_gather")
    return spec((x.shape[0] * _world_size(), *x.shape[1:]), x.dtype)


def _broadcast_infer(x, *, src=0):
    world = _world_size()
    if not isinstance(src, int) or not 0 <= src < world:
        raise OpError(f"broadcast: src={src!r} is not a rank of this job (world size {world})",
                      hint=f"use a rank in [0, {world - 1}]")
    return spec(x.shape, x.dtype)


def _implementation(name: str, infer: Callable) -> Callable:
    def run(x, **attrs):
        infer(x, **attrs)  # a collective is expensive; its rule always runs (cheap beside it)
        engine = ENGINE.engine
        if engine is None:
            return x  # one rank: every collective is the identity
        return engine(name, x, attrs)

    run.__name__ = f"{name}_engine"
    return run


_REDUCIBLE = dt.FLOAT_DTYPES + dt.INT_DTYPES
_FAMILY = {"family": "collective"}

all_reduce = Op(
    "all_reduce", kind=COMPOSITE, inputs=("x",), attrs={"op": "sum"}, infer=_all_reduce_infer,
    reference=lambda x, *, op="sum": all_reduce_reference([x], 0, op=op),
    decompose=_implementation("all_reduce", _all_reduce_infer), dtypes=_REDUCIBLE, accumulating=True,
    cases={**_FAMILY, "attrs": [{"op": o} for o in REDUCE_OPS]},
    doc="Reduce `x` over every rank (op: sum, mean or max); every rank gets the result.")
reduce_scatter = Op(
    "reduce_scatter", kind=COMPOSITE, inputs=("x",), attrs={"op": "sum"},
    infer=_reduce_scatter_infer, reference=lambda x, *, op="sum": reduce_scatter_reference([x], 0, op=op),
    decompose=_implementation("reduce_scatter", _reduce_scatter_infer), dtypes=_REDUCIBLE, accumulating=True,
    cases={**_FAMILY, "attrs": [{"op": o} for o in SCATTER_REDUCE_OPS]},
    doc="Reduce `x` over every rank, then rank r keeps slice r of axis 0 "
        "(x.shape[0] divisible by the world size).")
all_gather = Op(
    "all_gather", kind=COMPOSITE, inputs=("x",), infer=_all_gather_infer,
    reference=lambda x: all_gather_reference([x], 0), exact=True,
    decompose=_implementation("all_gather", _all_gather_infer), dtypes=dt.ALL_DTYPES, cases=_FAMILY,
    doc="Every rank's `x` concatenated along axis 0 in rank order (same shape on every rank).")
broadcast = Op(
    "broadcast", kind=COMPOSITE, inputs=("x",), attrs={"src": 0}, infer=_broadcast_infer,
    reference=lambda x, *, src=0: broadcast_reference([x], 0, src=src), exact=True,
    decompose=_implementation("broadcast", _broadcast_infer), dtypes=dt.ALL_DTYPES, cases=_FAMILY,
    doc="Rank `src`'s `x` on every rank (same shape and dtype on every rank).")


# --- gradients (SPMD: the loss is the sum of every rank's local loss, as in Megatron-LM) --------
@all_reduce.defvjp
def _all_reduce_vjp(g, out, x, *, op="sum"):
    if op == "max":
        raise OpError("all_reduce(op='max') has no gradient here",
                      hint="reduce with op='sum' or 'mean', or stop the gradient before the max")
    return (all_reduce(g, op=op),)  # d(sum_r x_r)/dx_r = 1 for every rank's cotangent


@reduce_scatter.defvjp
def _reduce_scatter_vjp(g, out, x, *, op="sum"):
    from accel.ops.elementwise import mul

    gathered = all_gather(g)  # each rank's slice of the cotangent flows back to every input
    return (gathered if op == "sum" else mul(gathered, 1.0 / _world_size()),)


@all_gather.defvjp
def _all_gather_vjp(g, out, x):
    return (reduce_scatter(g, op="sum"),)  # rank r's input appears in every rank's output


@broadcast.defvjp
def _broadcast_vjp(g, out, x, *, src=0):
    from accel.ops.elementwise import mul

    total = all_reduce(g, op="sum")  # every rank's output is rank src's input
    engine = ENGINE.engine
    rank = 0 if engine is None else engine.rank
    return (total if rank == src else mul(total, 0.0),)
