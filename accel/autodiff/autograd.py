"""Reverse-mode autograd for accel: `value_and_grad(fn)` and `grad(fn)`, JAX style.

Recording is an interceptor on the dispatcher (`accel.core.dispatch.push_interceptor`), pushed only
while the differentiated function runs, so the eager hot path is untouched otherwise. The tape
holds one entry per op at the outermost level that has a VJP: a composite with a VJP (softmax,
attention, cross_entropy...) is one entry and runs as usual (fused kernel or decomposition); a
composite without one records its decomposition; primitives without one (comparisons, argmax,
creation) are not differentiable and their outputs are constants.

VJPs are declared with their op (`@op.defvjp` beside each declaration in `accel/ops/*.py`) and
written in accel ops, so the backward pass runs on any backend, and under `accel.graph.compile` a
value_and_grad of accel ops traces forward and backward into one graph.

Why functional rather than `loss.backward()`: see docs/training.md (no hidden global state on
tensors, nothing to zero between steps, and it composes with compile).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from accel.core import dispatch
from accel.core.errors import OpError
from accel.core.op import Op
from accel.core.spec import describe
from accel.core.tensor import Tensor


class _Entry:
    __slots__ = ("op", "inputs", "attrs", "out")

    def __init__(self, op: Op, inputs: tuple, attrs: dict, out: Tensor):
        self.op, self.inputs, self.attrs, self.out = op, inputs, attrs, out


class Tape:
    """Records differentiable op calls whose inputs depend on the watched leaves."""

    def __init__(self):
        self.entries: list[_Entry] = []
        self.tracked: set[Tensor] = set()   # identity-hashed: every tensor that depends on a leaf
        self.paused = False                 # True while an op's own implementation runs

    def watch(self, t: Tensor) -> None:
        t.requires_grad = True
        self.tracked.add(t)

    def _depends(self, op: Op, args: tuple) -> bool:
        tensors = (*args[0], *args[1:]) if op.variadic else args
        for a in tensors:
            if isinstance(a, Tensor) and a.requires_grad and a in self.tracked:
                return True
        return False

    def __call__(self, op: Op, args: tuple, attrs: dict):
        if self.paused or not self._depends(op, args):
            return NotImplemented
        # scalars -> tensors, promotion casts (recorded themselves)
        args, attrs = dispatch.prepared(op, args, attrs)
        if op.vjp is None:
            if op.decompose is not None:
                # No VJP of its own: record the primitives it is made of (counted as decomposed).
                backend = dispatch.backend_of(op, args, attrs)
                dispatch.stats.add(backend.spec, op.name, "decomposed")
                return op.decompose(*args, **attrs)
            return self._run(op, args, attrs)  # not differentiable: the result is a constant
        out = self._run(op, args, attrs)
        if out.dtype.is_floating:
            self.entries.append(_Entry(op, args, attrs, out))
            self.watch(out)
        return out

    def _run(self, op: Op, args: tuple, attrs: dict) -> Tensor:
        """The op's normal dispatch (fused kernel, decomposition, other interceptors) unrecorded."""
        self.paused = True
        try:
            return dispatch.call(op, args, attrs)
        finally:
            self.paused = False

    def last_uses(self, leaves: list[Tensor]) -> dict[int, list[Tensor]]:
        """Tape index -> the leaves whose earliest consumer it is: once the reverse walk has
        passed that entry, nothing else adds to those leaves' gradients."""
        wanted = {id(x): x for x in leaves}
        first: dict[int, list[Tensor]] = {}
        for index, entry in enumerate(self.entries):
            tensors = (*entry.inputs[0], *entry.inputs[1:]) if entry.op.variadic else entry.inputs
            for a in tensors:
                if isinstance(a, Tensor) and id(a) in wanted:
                    first.setdefault(index, []).append(wanted.pop(id(a)))
        return first

    def backward(self, out: Tensor, seed: Tensor,
                 on_final: Callable[[int, dict], None] | None = None) -> dict[Tensor, Tensor]:
        """Cotangents of every tracked tensor reached from `out` (leaves included).
        `on_final(index, grads)` is called after entry `index` has been walked (None: no calls)."""
        grads: dict[Tensor, Tensor] = {out: seed}
        for index in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[index]
            g = grads.pop(entry.out, None)
            if g is None:
                if on_final is not None:
                    on_final(index, grads)
                continue
            op = entry.op
            in_grads = op.vjp(g, entry.out, *entry.inputs, **entry.attrs)
            if op.variadic:
                pairs = list(zip(entry.inputs[0], in_grads[0])) + list(zip(entry.inputs[1:], in_grads[1:]))
            else:
                pairs = zip(entry.inputs, in_grads)
            for x, gx in pairs:
                if gx is None or not isinstance(x, Tensor) or x not in self.tracked:
                    continue
                _check_grad(op, x, gx)
                previous = grads.get(x)
                grads[x] = gx if previous is None else previous + gx
            if on_final is not None:
                on_final(index, grads)
        return grads

    def release(self) -> None:
        for t in self.tracked:
            t.requires_grad = False
        self.tracked.clear()
        self.entries.clear()


def _check_grad(op: Op, x: Tensor, gx: Tensor) -> None:
    if tuple(gx.shape) != tuple(x.shape) or gx.dtype is not x.dtype:
        raise OpError(
            f"the VJP of {op.name} returned a gradient {describe(gx)} for an input {describe(x)}",
            hint="a VJP must return one gradient per input with the input's shape (sum-reduce "
                 "broadcast dims) and dtype; fix the op's @op.defvjp rule in accel/ops/")


class _Announcer:
    """Calls on_grad_ready for each differentiated leaf once its gradient is final."""

    def __init__(self, callback: "GradReady", pairs: list[tuple[tuple, Any]], tape: Tape) -> None:
        self.callback = callback
        self.path = {id(x): path for path, x in pairs}
        self.leaves = [x for _, x in pairs if isinstance(x, Tensor) and x.dtype.is_floating]
        self.final_at = tape.last_uses(self.leaves)
        self.done: set[int] = set()

    def after_entry(self, index: int, grads: dict) -> None:
        for x in self.final_at.get(index, ()):
            g = grads.get(x)
            if g is not None:      # no gradient reached it: zeros at the end
                self.done.add(id(x))
                self.callback(self.path[id(x)], g)

    def rest(self, grads: dict) -> None:
        """The leaves not announced during the walk, with the gradients the call will return
        (zeros stored into `grads` so that the call returns the same tensors)."""
        for x in self.leaves:
            if id(x) in self.done:
                continue
            g = grads.get(x)
            if g is None:
                from accel.ops import zeros_like

                g = grads[x] = zeros_like(x)
            self.callback(self.path[id(x)], g)


# --- pytrees: a Tensor, or dicts / lists / tuples of them -----------------------------------
def tree_leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in tree_leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in tree_leaves(item)]
    return [tree]


def tree_paths(tree, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, leaf) pairs in tree_leaves order; a path is the tuple of keys / indices."""
    if isinstance(tree, dict):
        return [pair for key in tree for pair in tree_paths(tree[key], (*prefix, key))]
    if isinstance(tree, (list, tuple)):
        return [pair for i, item in enumerate(tree) for pair in tree_paths(item, (*prefix, i))]
    return [(prefix, tree)]


def tree_map(fn: Callable, tree):
    if isinstance(tree, dict):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, item) for item in tree)
    return fn(tree)


# --- the public API -------------------------------------------------------------------------
GradReady = Callable[[tuple, Tensor], None]


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
                   on_grad_ready: GradReady | None = None) -> Callable:
    """`value_and_grad(fn)(*args) -> (value, grads)`: fn's scalar result and its gradient.

    `argnums` picks the differentiated positional arguments; each may be a Tensor or a pytree
    (dict/list/tuple) of Tensors, and its gradient has the same structure. Only floating-point
    leaves are differentiated (an integer leaf's gradient is None); a leaf that the result does
    not depend on gets zeros. With has_aux=True fn returns (value, aux) and the call returns
    ((value, aux), grads). Gradients have each leaf's shape and dtype.

    `on_grad_ready(path, grad)` is called once per differentiated leaf, during the backward
    walk, as soon as that leaf's gradient is final (the walk has passed the earliest op that
    read it), with the very tensor the call returns; `path` is the leaf's keys / indices in its
    argument (prefixed by its position in `argnums` when argnums is a sequence). Leaves no op
    read, or that got no gradient, are called at the end with their zeros. A data-parallel
    trainer launches gradient all-reduces from it while the rest of the backward runs (DDP's
    hooks). Without it the walk is unchanged.
    """
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def wrapped(*args, **kwargs):
        for n in nums:
            if n >= len(args):
                raise OpError(f"value_and_grad: argnums {argnums} but only {len(args)} positional "
                              f"arguments were given", hint="pass the differentiated arguments positionally")
        pairs = [((n,) + path if not single else path, leaf)
                 for n in nums for path, leaf in tree_paths(args[n])]
        watched = [x for _, x in pairs if isinstance(x, Tensor) and x.dtype.is_floating]
        if len({id(x) for x in watched}) != len(watched):
            raise OpError("value_and_grad: the same tensor object appears twice among the "
                          "differentiated arguments", hint="pass each parameter once (tie weights "
                          "inside fn instead)")
        previous = [x.requires_grad for x in watched]
        tape = Tape()
        for x in watched:
            tape.watch(x)
        dispatch.push_interceptor(tape)
        try:
            result = fn(*args, **kwargs)
        finally:
            dispatch.pop_interceptor(tape)
        try:
            value, aux = result if has_aux else (result, None)
            if not isinstance(value, Tensor) or value.size != 1 or not value.dtype.is_floating:
                raise OpError(f"value_and_grad: fn must return a scalar floating tensor, got "
                              f"{describe(value) if isinstance(value, Tensor) else type(value).__name__}",
                              hint="reduce the result (accel.ops.sum / mean), or return (loss, aux) "
                                   "with has_aux=True")
            grads = {}
            announce = None if on_grad_ready is None else _Announcer(on_grad_ready, pairs, tape)
            if value in tape.tracked:
                from accel.ops import full_like

                grads = tape.backward(value, full_like(value, 1.0),
                                      None if announce is None else announce.after_entry)
            if announce is not None:
                announce.rest(grads)
        finally:
            tape.release()
            for x, flag in zip(watched, previous):
                x.requires_grad = flag

        def grad_of(x):
            if not isinstance(x, Tensor) or not x.dtype.is_floating:
                return None
            g = grads.get(x)
            if g is None:
                from accel.ops import zeros_like

                g = zeros_like(x)
            return g

        per_arg = tuple(tree_map(grad_of, args[n]) for n in nums)
        out_grads = per_arg[0] if single else per_arg
        return ((value, aux) if has_aux else value), out_grads

    wrapped.__name__ = f"value_and_grad({getattr(fn, '__name__', 'fn')})"
    wrapped.__doc__ = fn.__doc__
    return wrapped


def grad(fn: Callable, argnums: int | Sequence[int] = 0, *, has_aux: bool = False) -> Callable:
    """`grad(fn)(*args) -> grads` (with has_aux: (grads, aux)); see value_and_grad."""
    vg = value_and_grad(fn, argnums, has_aux=has_aux)

    def wrapped(*args, **kwargs):
        value, grads = vg(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    wrapped.__name__ = f"grad({getattr(fn, '__name__', 'fn')})"
    return wrapped


def stop_gradient(x: Any):
    """x as a constant: a new wrapper of the same array that no tape tracks."""
    if isinstance(x, Tensor):
        return Tensor(x.data, x.backend)
    return tree_map(stop_gradient, x)
