"""How a global batch is split over ranks and micro-batches, and which samples each one takes.

    G = micro_batch × grad_accum × world_size          (sequences per optimizer step)

The global batch of step s is the samples s·G .. s·G+G-1, whatever the world size: rank r takes
global indices r·(micro·accum) + k·micro + b for micro-step k. A sample is keyed by its id only
(accel/train/data.py), so a run on 1, 2, 3 or 4 ranks trains on the same data, and a run resized
between checkpoints keeps consuming the same sequence. What cannot be derived is refused with
the world sizes (and micro-batches) that would work, as DeepSpeed's elasticity config does.

In deterministic-reduction mode the global batch is cut into `shards` fixed virtual micro-shards
of G/shards samples; a rank's micro-batch is exactly one shard, so grad_accum = shards / world.
"""
from __future__ import annotations

from dataclasses import dataclass

from accel.train.errors import TrainConfigError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int
    grad_accum: int
    world_size: int
    shards: int = 0            # deterministic reduction: fixed virtual micro-shards (0: off)

    @property
    def per_rank(self) -> int:
        return self.micro_batch * self.grad_accum

    def sample_ids(self, step: int, rank: int, micro: int) -> range:
        """Global sample ids of micro-step `micro` of rank `rank` at optimizer step `step`."""
        start = step * self.global_batch + rank * self.per_rank + micro * self.micro_batch
        return range(start, start + self.micro_batch)

    def shard_index(self, rank: int, micro: int) -> int:
        """The global position of a rank's micro-batch among the step's micro-batches."""
        return rank * self.grad_accum + micro

    def describe(self) -> dict:
        return {"global_batch": self.global_batch, "micro_batch": self.micro_batch,
                "grad_accum": self.grad_accum, "world_size": self.world_size, "shards": self.shards}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise TrainConfigError(f"{name} must be a positive integer, got {value}",
                               hint=f"pass {name} 1 or more")


def plan_batches(global_batch: int, world_size: int, *, micro_batch: int | None = None,
                 grad_accum: int | None = None, max_micro_batch: int | None = None,
                 shards: int = 0) -> BatchPlan:
    """Derive micro-batch and accumulation for `world_size` ranks, or refuse with the choices."""
    _positive("--global-batch-size", global_batch)
    _positive("--batch-size", micro_batch)
    _positive("--grad-accum", grad_accum)
    _positive("--max-micro-batch", max_micro_batch)
    _positive("world size", world_size)
    G, W = global_batch, world_size
    if shards:
        return _deterministic_plan(G, W, shards, micro_batch, grad_accum)
    if micro_batch and grad_accum:
        if micro_batch * grad_accum * W != G:
            raise TrainConfigError(
                f"--batch-size {micro_batch} × --grad-accum {grad_accum} × {W} ranks = "
                f"{micro_batch * grad_accum * W}, not the global batch {G}",
                hint="give only one of --batch-size / --grad-accum and the other is derived")
        return BatchPlan(G, micro_batch, grad_accum, W)
    if micro_batch:
        if G % micro_batch:
            raise TrainConfigError(f"--batch-size {micro_batch} does not divide the global batch {G}",
                                   hint=f"micro-batches that divide it: {_list(divisors(G))}")
        if (G // micro_batch) % W:
            raise TrainConfigError(
                f"the global batch {G} with micro-batch {micro_batch} cannot be split over {W} ranks",
                hint=f"valid world sizes: {_list(divisors(G // micro_batch))}; or leave --batch-size "
                     "out and it is derived")
        return BatchPlan(G, micro_batch, G // (micro_batch * W), W)
    if G % W:
        raise TrainConfigError(f"the global batch {G} does not divide among {W} ranks",
                               hint=f"valid world sizes: {_list(divisors(G))}")
    per = G // W
    if grad_accum:
        if per % grad_accum:
            raise TrainConfigError(
                f"the global batch {G} on {W} ranks is {per} per rank, which --grad-accum "
                f"{grad_accum} does not divide",
                hint=f"accumulation steps that fit: {_list(divisors(per))}; valid world sizes for "
                     f"--grad-accum {grad_accum}: {_list(divisors(G // grad_accum)) if G % grad_accum == 0 else 'none'}")
        return BatchPlan(G, per // grad_accum, grad_accum, W)
    accum = next(d for d in divisors(per) if max_micro_batch is None or per // d <= max_micro_batch)
    return BatchPlan(G, per // accum, accum, W)


def _deterministic_plan(G: int, W: int, shards: int, micro: int | None, accum: int | None) -> BatchPlan:
    _positive("--reduction-shards", shards)
    if G % shards:
        raise TrainConfigError(f"--reduction-shards {shards} does not divide the global batch {G}",
                               hint=f"shard counts that divide it: {_list(divisors(G))}")
    if shards % W:
        raise TrainConfigError(
            f"{W} ranks cannot share {shards} fixed reduction shards evenly",
            hint=f"valid world sizes with --deterministic-reduction: {_list(divisors(shards))}")
    size = G // shards
    if micro not in (None, size) or accum not in (None, shards // W):
        raise TrainConfigError(
            f"--deterministic-reduction fixes the micro-batch at one shard ({size} samples) and "
            f"--grad-accum at {shards // W} on {W} ranks",
            hint="leave --batch-size and --grad-accum out, or change --reduction-shards")
    return BatchPlan(G, size, shards // W, W, shards)


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values))
