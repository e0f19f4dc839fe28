"""The collectives as functions, and gradient buckets.

Each function calls the accel op (declared in accel/ops/collective.py), so it dispatches and is
counted like any op. `all_reduce_buckets` flattens many tensors into a few large messages —
one collective per bucket instead of one per tensor — and launches every bucket before it waits
for the first (torch.distributed work handles), so communication overlaps the copies.
"""
from __future__ import annotations

from dataclasses import dataclass

from accel.core.dispatch import stats as dispatch_stats
from accel.core.errors import OpError
from accel.core.tensor import Tensor
from accel.ops import collective as _ops

DEFAULT_BUCKET_BYTES = 25 * 2 ** 20  # torch DDP's default bucket_cap_mb=25


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """`x` reduced over every rank (op: "sum", "mean" or "max")."""
    return _ops.all_reduce(x, op=op)


def reduce_scatter(x: Tensor, op: str = "sum") -> Tensor:
    """`x` reduced over every rank; this rank's slice of axis 0 (x.shape[0] % world_size == 0)."""
    return _ops.reduce_scatter(x, op=op)


def all_gather(x: Tensor) -> Tensor:
    """Every rank's `x` concatenated along axis 0 in rank order."""
    return _ops.all_gather(x)


def broadcast(x: Tensor, src: int = 0) -> Tensor:
    """Rank `src`'s `x`, on every rank."""
    return _ops.broadcast(x, src=src)


@dataclass(frozen=True)
class Bucket:
    """Which tensors (by position in the caller's list) travel together in one message."""

    indices: tuple[int, ...]
    nbytes: int


def plan_buckets(tensors: list[Tensor], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[Bucket]:
    """Consecutive tensors of one backend and dtype, packed greedily into buckets of at most
    `bucket_bytes` (a larger tensor travels alone). Every rank computes the same plan from the
    same shapes, so the collectives line up."""
    if bucket_bytes <= 0:
        raise OpError(f"bucket_bytes must be positive, got {bucket_bytes}",
                      hint="use e.g. 25 * 2**20 (25 MiB, torch DDP's default)")
    buckets: list[Bucket] = []
    current: list[int] = []
    size = 0
    key = None
    for i, t in enumerate(tensors):
        k = (t.backend, t.dtype)
        if current and (k != key or size + t.nbytes > bucket_bytes):
            buckets.append(Bucket(tuple(current), size))
            current, size = [], 0
        current.append(i)
        size += t.nbytes
        key = k
    if current:
        buckets.append(Bucket(tuple(current), size))
    return buckets


class PendingBuckets:
    """Launched bucket collectives; `wait()` gives the reduced tensors in the caller's order."""

    def __init__(self, tensors: list[Tensor], buckets: list[Bucket], pending: list):
        self.tensors, self.buckets, self.pending = tensors, buckets, pending

    def wait(self) -> list[Tensor]:
        from accel.ops import reshape, slice as slice_

        out: list[Tensor | None] = [None] * len(self.tensors)
        for bucket, pending in zip(self.buckets, self.pending):
            flat = pending.wait() if pending is not None else None
            offset = 0
            for i in bucket.indices:
                t = self.tensors[i]
                if flat is None:  # one rank: nothing to reduce
                    out[i] = t
                    continue
                n = t.size
                piece = flat if len(bucket.indices) == 1 else slice_(flat, axes=(0,), starts=(offset,),
                                                                         stops=(offset + n,))
                out[i] = reshape(piece, t.shape)
                offset += n
        return out  # type: ignore[return-value]


def start_all_reduce_buckets(tensors: list[Tensor], op: str = "mean",
                             bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> PendingBuckets:
    """Launch the bucketed all_reduce and return at once (async where the library is);
    `.wait()` on the result gives the reduced tensors. A training loop launches while the
    backward pass still runs and waits before the optimizer step."""
    from accel.ops import concat, reshape

    buckets = plan_buckets(list(tensors), bucket_bytes)
    engine = _ops.ENGINE.engine
    pending = []
    for bucket in buckets:
        if engine is None:
            pending.append(None)
            continue
        members = [tensors[i] for i in bucket.indices]
        flats = [reshape(t, (t.size,)) for t in members]
        flat = flats[0] if len(flats) == 1 else concat(flats, 0)
        _ops.all_reduce.infer(flat, op=op)
        dispatch_stats.add(flat.backend.spec, _ops.all_reduce.name, "decomposed")
        # a concatenated bucket is ours to reduce in place; a lone tensor is the caller's
        pending.append(engine.start("all_reduce", flat, {"op": op}, donated=len(flats) > 1))
    return PendingBuckets(list(tensors), buckets, pending)


def all_reduce_buckets(tensors: list[Tensor], op: str = "mean",
                       bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[Tensor]:
    """Every tensor all-reduced, one collective per bucket of at most `bucket_bytes`, results in
    the order given."""
    return start_all_reduce_buckets(tensors, op, bucket_bytes).wait()
