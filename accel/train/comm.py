"""The process group as the training loop sees it: one object with the collectives it uses.

Inside a torchrun job (accel.distributed initialised) every call goes to accel.distributed
(torch.distributed underneath: gloo for host backends, the device's own library otherwise). In
one process the same calls are identities, so the loop has one code path for 1 and N ranks.
"""
from __future__ import annotations

import os

from accel.core.tensor import Tensor

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE")


class Comm:
    """One process: every collective is the identity."""

    rank = 0
    world_size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, x: Tensor, op: str = "sum") -> Tensor:
        return x

    def start_all_reduce_buckets(self, tensors: list[Tensor], op: str = "mean",
                                 bucket_bytes: int = 25 * 2 ** 20):
        """Launch the bucketed all-reduce; `.wait()` on the result gives the reduced tensors."""
        return _Done(list(tensors))

    def reduce_scatter(self, x: Tensor, op: str = "sum") -> Tensor:
        return x

    def all_gather(self, x: Tensor) -> Tensor:
        return x

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        return x

    def check_agreement(self, name: str, value) -> None:
        return None

    def barrier(self) -> None:
        return None

    def fleet(self, spec: str) -> list[str]:
        """Every rank's backend spec in rank order (`spec`: this rank's)."""
        return [spec]


class _Done:
    def __init__(self, tensors: list[Tensor]) -> None:
        self.tensors = tensors

    def wait(self) -> list[Tensor]:
        return self.tensors


class TorchComm(Comm):
    """The ranks of a torch.distributed job, through accel.distributed."""

    def __init__(self, dist) -> None:
        self._dist = dist
        self.rank, self.world_size, self.local_rank = dist.rank(), dist.world_size(), dist.local_rank()

    def all_reduce(self, x, op="sum"):
        return self._dist.all_reduce(x, op=op)

    def start_all_reduce_buckets(self, tensors, op="mean", bucket_bytes=25 * 2 ** 20):
        return self._dist.start_all_reduce_buckets(tensors, op=op, bucket_bytes=bucket_bytes)

    def reduce_scatter(self, x, op="sum"):
        return self._dist.reduce_scatter(x, op=op)

    def all_gather(self, x):
        return self._dist.all_gather(x)

    def broadcast(self, x, src=0):
        return self._dist.broadcast(x, src=src)

    def check_agreement(self, name, value):
        self._dist.check_agreement(name, str(value))

    def barrier(self):
        self._dist.barrier()

    def fleet(self, spec):
        return list(self._dist.fleet())


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or anything that sets its environment)."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def launch_local_rank() -> int:
    """This process's local rank before the job is joined (it picks the backend)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def connect(backend=None) -> Comm:
    """The job's process group, this rank on `backend`: initialise accel.distributed when
    torchrun started us."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Comm()
    import accel.distributed as dist

    if not dist.is_initialized():
        dist.init(backend=backend)
    return TorchComm(dist)
