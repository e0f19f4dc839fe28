"""Every accel op, declared once in the modules of this package.

Primitives are what a backend must provide; composites have a reference decomposition that runs
unless a backend registers a fused kernel. Each op registers itself when declared
(`accel.core.op.REGISTRY`); this package imports every module in it (a module whose name starts
with `_` holds helpers) and re-exports each module's public names, so a new op module or a new op
needs no import list here. `ALL_OPS` lists the ops (the op × backend table, the conformance suite
and `accel info` read it).
"""
from __future__ import annotations

import importlib
import pkgutil

from accel.core.op import REGISTRY, Op


def _public_names(module) -> dict:
    """The module's ops and the public functions it defines (zeros, index_copy_inplace, ...);
    the numpy references stay in their module (`op.reference` reaches them)."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and (
        isinstance(v, Op) or (callable(v) and getattr(v, "__module__", None) == module.__name__
                              and not k.endswith("_reference")))}


for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        globals().update(_public_names(importlib.import_module(f"{__name__}.{_info.name}")))

# By name: the same order whichever module happened to import an op first.
ALL_OPS: tuple[Op, ...] = tuple(sorted((op for op in REGISTRY.values() if op.module.startswith(__name__ + ".")),
                                       key=lambda op: op.name))
PRIMITIVES: tuple[Op, ...] = tuple(op for op in ALL_OPS if op.is_primitive)
COMPOSITES: tuple[Op, ...] = tuple(op for op in ALL_OPS if not op.is_primitive)
BY_NAME: dict[str, Op] = {op.name: op for op in ALL_OPS}


def get_op(name: str) -> Op:
    from accel.core.errors import OpError

    op = BY_NAME.get(name)
    if op is None:
        raise OpError(f"unknown op {name!r}", hint=f"known ops: {', '.join(sorted(BY_NAME))}")
    return op
