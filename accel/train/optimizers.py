"""The optimizer step on N ranks: every rank holds the whole AdamW state (`Replicated`), or each
holds 1/N of it (`ZeroSharded`, ZeRO stage 1). Both take the reduced mean gradient (or, for
ZeRO, the local mean gradient, which it reduce-scatters itself), clip it by the global norm and
update; both end with identical parameters on every rank.

The global norm every rank clips with is agreed by an all-reduce (max of the ranks' values): in a
mixed fleet each backend sums the squares in its own order, and ranks must not drift apart.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import accel
from accel import ops
from accel.autodiff.optim import AdamState, AdamW, global_norm
from accel.core.tensor import Tensor
from accel.train.comm import Comm
from accel.train.flat import FlatLayout

FLAT = "flat"   # the single key of a ZeRO shard's AdamState dicts


def _clip_scale(norm: Tensor, max_norm: float) -> Tensor:
    """min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_."""
    return ops.minimum(ops.div(float(max_norm), ops.add(norm, 1e-6)), 1.0)


def _agreed(comm: Comm, norm: Tensor) -> Tensor:
    if comm.world_size == 1:
        return norm
    return ops.reshape(comm.all_reduce(ops.reshape(norm, (1,)), op="max"), ())


class Replicated:
    sharded = False

    def __init__(self, opt: AdamW, comm: Comm) -> None:
        self.opt, self.comm = opt, comm

    def init(self, params: dict[str, Tensor]) -> AdamState:
        return self.opt.init(params)

    def step(self, params, grads, state, *, lr: float, clip: float, reduced: bool = True):
        """(params, state, pre-clip global norm as a Tensor or None)."""
        norm = None
        if clip > 0:
            norm = _agreed(self.comm, global_norm(grads))
            scale = _clip_scale(norm, clip)
            grads = {k: ops.mul(g, scale if scale.dtype is g.dtype else ops.cast(scale, g.dtype))
                     for k, g in grads.items()}
        params, state = self.opt.update(params, grads, state, lr=lr)
        return params, state, norm

    def full_state(self, state: AdamState) -> AdamState:
        return state

    def from_full(self, state: AdamState, params: dict[str, Tensor]) -> AdamState:
        return state

    def state_bytes(self, state: AdamState) -> int:
        return sum(t.nbytes for d in (state.m, state.v) for t in d.values())


class ZeroSharded(Replicated):
    """ZeRO-1: reduce-scatter the gradients, update this rank's shard of the flat parameter
    vector with its shard of the moments, all-gather the parameters."""

    sharded = True

    def __init__(self, opt: AdamW, comm: Comm, params: dict[str, Tensor]) -> None:
        super().__init__(opt, comm)
        self.layout = FlatLayout.of(params, comm.world_size)
        # weight decay per element of this shard (AdamW decays matrices only by default); the
        # update itself runs with decay 0 after p *= 1 - lr * wd on these elements
        mask = np.zeros(self.layout.padded, np.float32)
        for name, a, b, shape in self.layout.offsets():
            mask[a:b] = opt.decays(params[name])
        lo = comm.rank * self.layout.shard
        self.decay_mask = mask[lo:lo + self.layout.shard]
        self.plain = dataclasses.replace(opt, weight_decay=0.0)

    def init(self, params):
        shard = self.layout.shard_of(self.layout.flatten(params), self.comm.rank)
        return AdamState(0, {FLAT: ops.zeros_like(shard)}, {FLAT: ops.zeros_like(shard)})

    def step(self, params, grads, state, *, lr, clip, reduced=False):
        flat_params = self.layout.flatten(params)
        p = self.layout.shard_of(flat_params, self.comm.rank)
        if reduced:   # the fixed-order reducer already averaged: take our part, norm from all
            g = self.layout.shard_of(self.layout.flatten(grads), self.comm.rank)
            norm = global_norm(grads) if clip > 0 else None
        else:
            g = self.comm.reduce_scatter(self.layout.flatten(grads), op="mean")
            norm = None
            if clip > 0:
                squares = ops.reshape(ops.sum(ops.mul(g, g)), (1,))
                norm = ops.reshape(ops.sqrt(self.comm.all_reduce(squares, op="sum")), ())
        if norm is not None:
            norm = _agreed(self.comm, norm)
            scale = _clip_scale(norm, clip)
            g = ops.mul(g, scale if scale.dtype is g.dtype else ops.cast(scale, g.dtype))
        if self.opt.weight_decay:
            factor = np.where(self.decay_mask > 0, np.float32(1.0 - lr * self.opt.weight_decay),
                              np.float32(1.0)).astype(p.dtype.numpy)
            p = ops.mul(p, accel.from_numpy(factor, p.backend))
        new, state = self.plain.update({FLAT: p}, {FLAT: g}, state, lr=lr)
        gathered = self.comm.all_gather(new[FLAT])
        return self.layout.unflatten(gathered), state, norm

    def full_state(self, state: AdamState) -> AdamState:
        """The whole moments keyed by parameter name (a collective: every rank calls it)."""
        m = self.layout.unflatten(self.comm.all_gather(state.m[FLAT]))
        v = self.layout.unflatten(self.comm.all_gather(state.v[FLAT]))
        return AdamState(state.step, m, v)

    def from_full(self, state: AdamState, params) -> AdamState:
        """This rank's shard of moments loaded whole from a checkpoint (any world size)."""
        cut = lambda d: {FLAT: self.layout.shard_of(self.layout.flatten(d), self.comm.rank)}
        return AdamState(state.step, cut(state.m), cut(state.v))
