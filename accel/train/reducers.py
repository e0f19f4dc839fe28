"""Gradient reducers: turn each rank's micro-batch gradients into the mean gradient of the whole
global batch. The trainer calls `add` once per micro-batch and `finish` once per step.

- `BucketedMean` (default): micro-batch gradients are summed locally, then all-reduced (mean
  over ranks) in buckets of `bucket_bytes` through accel.distributed.start_all_reduce_buckets,
  which launches every bucket at once (asynchronously where the library is); `finish` returns
  a handle and the trainer gathers the step's losses while the buckets travel. (The autograd
  tape hands back all gradients together, so buckets do not yet start during the backward
  pass itself.)
- `LocalMean`: no communication (one rank, or ZeRO, whose optimizer reduce-scatters itself).
- `FixedOrderSum` (`--deterministic-reduction`): each micro-batch is one fixed virtual shard of
  the global batch; the per-shard gradients of all ranks are all-gathered (rank order is shard
  order) and summed left to right in global shard order. The float operations are then the same
  for every world size that divides the shards, so parameters are bitwise identical. Cost: the
  all-gather moves shards × parameters values instead of parameters, and the sum is serial.
"""
from __future__ import annotations

from accel import ops
from accel.core.tensor import Tensor
from accel.autodiff.optim import add_grads, scale_grads
from accel.train.comm import Comm
from accel.train.flat import FlatLayout


class LocalMean:
    def __init__(self, accum: int) -> None:
        self.accum, self.total = accum, None

    def add(self, grads: dict[str, Tensor]) -> None:
        self.total = add_grads(self.total, grads)

    def finish(self) -> dict[str, Tensor]:
        total, self.total = self.total, None
        return total if self.accum == 1 else scale_grads(total, 1.0 / self.accum)


class BucketedMean(LocalMean):
    def __init__(self, accum: int, comm: Comm, bucket_bytes: int) -> None:
        super().__init__(accum)
        self.comm, self.bucket_bytes = comm, bucket_bytes

    def finish(self):
        local = super().finish()
        names = sorted(local)
        pending = self.comm.start_all_reduce_buckets([local[n] for n in names], op="mean",
                                                     bucket_bytes=self.bucket_bytes)
        return _Pending(names, pending)


class _Pending:
    def __init__(self, names: list[str], pending) -> None:
        self.names, self.pending = names, pending

    def wait(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.pending.wait()))


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
