"""Gradient reducers: turn each rank's micro-batch gradients into the mean gradient of the whole
global batch. The trainer calls `add` once per micro-batch and `finish` once per step.

- `BucketedMean` (default): the first micro-batches' gradients are summed locally with no
  communication; on the last one the trainer passes `on_grad_ready` to value_and_grad, so each
  parameter's gradient arrives as soon as the backward walk has made it final. It joins its
  bucket of a `GradBuckets` plan fixed for the run (the same on every rank), and a bucket whose
  members are all in is all-reduced (mean over ranks) asynchronously at once, in plan order —
  bucket k+1 never before bucket k, so every rank issues the same collectives in the same
  order — while the rest of the backward runs (DDP's gradient hooks). `finish` returns a handle;
  the trainer gathers the step's losses while the last buckets travel, then waits on all.
- `LocalMean`: no communication (one rank, or ZeRO, whose optimizer reduce-scatters itself).
- `FixedOrderSum` (`--deterministic-reduction`): each micro-batch is one fixed virtual shard of
  the global batch; the per-shard gradients of all ranks are all-gathered (rank order is shard
  order) and summed left to right in global shard order. The float operations are then the same
  for every world size that divides the shards, so parameters are bitwise identical. Cost: the
  all-gather moves shards × parameters values instead of parameters, and the sum is serial.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from accel import ops
from accel.core.tensor import Tensor
from accel.autodiff.optim import add_grads, scale_grads
from accel.train.comm import Comm
from accel.train.flat import FlatLayout


@dataclass(frozen=True)
class GradBuckets:
    """Which gradients travel together, fixed for the run and the same on every rank: names in
    the order their gradients are expected to become final, packed by plan_buckets."""

    buckets: tuple[tuple[str, ...], ...]
    nbytes: tuple[int, ...]           # each bucket's size: its single all-reduce's bucket_bytes
    bucket_of: dict[str, int]

    @classmethod
    def plan(cls, params: dict[str, Tensor], order: Sequence[str], bucket_bytes: int) -> "GradBuckets":
        from accel.distributed.collectives import plan_buckets

        order = list(order)
        packed = plan_buckets([params[n] for n in order], bucket_bytes)
        buckets = tuple(tuple(order[i] for i in b.indices) for b in packed)
        return cls(buckets, tuple(max(b.nbytes, 1) for b in packed),
                   {n: k for k, names in enumerate(buckets) for n in names})

    @classmethod
    def reverse_of(cls, params: dict[str, Tensor], bucket_bytes: int) -> "GradBuckets":
        """The first step's plan: reverse parameter order (DDP's), until the backward has shown
        the real order (see Trainer.relearn_buckets)."""
        return cls.plan(params, list(reversed(list(params))), bucket_bytes)


class LocalMean:
    def __init__(self, accum: int) -> None:
        self.accum, self.total = accum, None

    def add(self, grads: dict[str, Tensor]) -> None:
        self.total = add_grads(self.total, grads)

    def finish(self) -> dict[str, Tensor]:
        total, self.total = self.total, None
        return total if self.accum == 1 else scale_grads(total, 1.0 / self.accum)


class BucketedMean(LocalMean):
    def __init__(self, accum: int, comm: Comm, plan: GradBuckets) -> None:
        super().__init__(accum)
        self.comm, self.plan = comm, plan
        self.final: dict[str, Tensor] = {}          # this rank's mean gradient, before the reduce
        self.missing = [len(b) for b in plan.buckets]
        self.launched: list = []                     # bucket k's pending all-reduce at [k]
        self.ready_order: list[str] = []             # names in the order the walk finished them

    def on_grad_ready(self, path: tuple, grad: Tensor) -> None:
        """value_and_grad's hook on the step's last micro-batch: `grad` is final. The same
        float operations as LocalMean.finish (sum in micro-batch order, then 1/accum)."""
        name = path[0]
        total = grad if self.total is None else ops.add(self.total[name], grad)
        self._put(name, total if self.accum == 1 else ops.mul(total, 1.0 / self.accum))

    def _put(self, name: str, mean: Tensor) -> None:
        self.final[name] = mean
        self.ready_order.append(name)
        self.missing[self.plan.bucket_of[name]] -= 1
        # launch, in plan order, every bucket whose gradients are all in
        while len(self.launched) < len(self.missing) and self.missing[len(self.launched)] == 0:
            k = len(self.launched)
            self.launched.append(self.comm.start_all_reduce_buckets(
                [self.final[n] for n in self.plan.buckets[k]], op="mean", bucket_bytes=self.plan.nbytes[k]))

    def finish(self):
        if not self.final:      # the last micro-batch came through add(): launch everything now
            for name, mean in super().finish().items():
                self._put(name, mean)
        self.total = None
        return _Pending(self.plan, self.launched)


class _Pending:
    def __init__(self, plan: GradBuckets, launched: list) -> None:
        self.plan, self.launched = plan, launched

    def wait(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for names, pending in zip(self.plan.buckets, self.launched):
            out.update(zip(names, pending.wait()))
        return out


class FixedOrderSum:
    def __init__(self, shards: int, comm: Comm) -> None:
        self.shards, self.comm, self.parts, self.layout = shards, comm, [], None

    def add(self, grads: dict[str, Tensor]) -> None:
        if self.layout is None:
            self.layout = FlatLayout.of(grads)
        self.parts.append(ops.unsqueeze(self.layout.flatten(grads), 0))

    def finish(self) -> dict[str, Tensor]:
        mine = self.parts[0] if len(self.parts) == 1 else ops.concat(self.parts, axis=0)
        self.parts = []
        every = self.comm.all_gather(mine)           # (shards, P): rank order is shard order
        total = ops.reshape(ops.slice(every, axes=(0,), starts=(0,), stops=(1,)), (-1,))
        for i in range(1, self.shards):
            total = ops.add(total, ops.reshape(ops.slice(every, axes=(0,), starts=(i,), stops=(i + 1,)), (-1,)))
        return self.layout.unflatten(ops.mul(total, 1.0 / self.shards))
