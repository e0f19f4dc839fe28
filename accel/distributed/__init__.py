"""accel.distributed: many processes, many devices, mixed hardware, on torch.distributed.

torchrun launches the ranks (`accel train --nproc-per-node N` starts it for you); `init()` joins
the job from its environment; the collectives are accel ops (accel/ops/collective.py) that run on
the library each backend declares (nccl, hccl, ... or gloo for host memory). See
docs/distributed.md.
"""
from __future__ import annotations

from accel.distributed.agreement import check_agreement
from accel.distributed.collectives import (
    DEFAULT_BUCKET_BYTES, Bucket, PendingBuckets, all_gather, all_reduce, all_reduce_buckets,
    broadcast, plan_buckets, reduce_scatter, start_all_reduce_buckets,
)
from accel.distributed.engine import collective_timeout, stats as collective_stats
from accel.distributed.launch import backend_for_local_rank, run_torchrun, worker_argv
from accel.distributed.process_group import (
    DistInfo, barrier, fleet, info, init, is_initialized, local_rank, rank, shutdown, world_size,
)

__all__ = [
    "DistInfo", "init", "is_initialized", "rank", "world_size", "local_rank", "barrier", "shutdown",
    "info", "fleet", "all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_reduce_buckets",
    "start_all_reduce_buckets", "plan_buckets", "Bucket", "PendingBuckets", "DEFAULT_BUCKET_BYTES",
    "check_agreement", "collective_stats", "collective_timeout", "run_torchrun", "worker_argv", "backend_for_local_rank",
]
