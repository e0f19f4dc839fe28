"""The job's process groups: start from torchrun's environment (or explicit arguments), say who
this process is, barrier, shut down.

Two groups, both torch.distributed's own:
- the control group (the default world group, always gloo over host memory): barrier, the
  agreement checks, the exchange of each rank's backend at start;
- the data group that the collectives run on, on the library the fleet agrees on: each rank's
  backend declares one (`Capabilities.collective_backend`: nccl for torch:cuda, hccl for
  torch:npu, gloo for host memory ...). When every rank declares the same library the data group
  uses it; in a mixed fleet (ranks on different backends) every rank goes through host memory
  and gloo (docs/distributed.md "Mixed fleets").
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from accel.core.errors import DistributedError

# Rendezvous of many processes on a loaded host takes seconds: the control group waits at least
# this long even when the collectives' own timeout (timeout_s) is shorter.
CONTROL_TIMEOUT_MIN_S = 60.0
NAME_BYTES = 96  # the fixed width of a string exchanged over the control group (backend specs)

# What to install when torch.distributed has no such library here.
LIBRARY_SOURCES: dict[str, str] = {
    "gloo": "a torch build with gloo (every official wheel has it)",
    "nccl": "a CUDA build of torch (https://pytorch.org/get-started/locally/)",
    "hccl": "torch_npu (Huawei Ascend), which registers the hccl backend",
    "cncl": "torch_mlu (Cambricon), which registers the cncl backend",
    "mccl": "torch_musa (Moore Threads), which registers the mccl backend",
    "xccl": "an XPU build of torch >= 2.8 (Intel GPUs)",
}


@dataclass(frozen=True)
class DistInfo:
    """Who this process is in the job, and which libraries it runs on."""

    rank: int
    world_size: int
    local_rank: int
    comm_backend: str | None  # the torch.distributed library of the collectives; None: one rank
    accel_backend: str        # this rank's accel backend, e.g. "torch:cuda:0", "numpy"


@dataclass
class _State:
    info: DistInfo | None = None
    control: Any = None              # torch ProcessGroup (gloo) or None for one rank
    data: Any = None                 # torch ProcessGroup the collectives run on
    fleet: tuple[str, ...] = ()      # every rank's accel backend spec, in rank order
    owns_default: bool = False       # we called init_process_group, so shutdown destroys it
    timeout_s: float = 300.0


STATE = _State()


def _torch_distributed():
    try:
        import torch.distributed as dist
    except Exception as exc:  # torch is an optional dependency of accel
        raise DistributedError(f"multi-process jobs need torch.distributed, which failed to import: {exc!r}",
                               hint="pip install 'accel-layer[torch]'") from None
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed",
                               hint="install an official torch wheel (pip install 'accel-layer[torch]')")
    return dist


def _from_env(name: str, given, default):
    if given is not None:
        return int(given)
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init(*, rank: int | None = None, world_size: int | None = None, master_addr: str | None = None,
         master_port: int | None = None, timeout_s: float = 300.0, backend=None) -> DistInfo:
    """Join the job. Reads torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
    unless given; `backend` is this rank's accel backend (default: the current one, so
    ACCEL_BACKEND per process works). One rank without a launcher needs no process group.
    Idempotent: a second call returns the first call's DistInfo. A torch.distributed default group
    that someone else started (torchft, a host framework) is joined as it is."""
    if STATE.info is not None:
        return STATE.info
    from accel.core.registry import get_backend

    accel_backend = get_backend(backend)
    rank = _from_env("RANK", rank, 0)
    world_size = _from_env("WORLD_SIZE", world_size, 1)
    local_rank = _from_env("LOCAL_RANK", None, rank if world_size > 1 else 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(f"rank {rank} is not in a job of world size {world_size}",
                               hint="launch with torchrun, or pass 0 <= rank < world_size")
    dist = None
    if world_size > 1 or _already_started():
        dist = _torch_distributed()
    if dist is None:
        STATE.info = DistInfo(0, 1, 0, None, accel_backend.spec)
        STATE.fleet = (accel_backend.spec,)
        return STATE.info
    own = accel_backend.collective_backend
    if own is None:
        raise DistributedError(
            f"rank {rank}: backend {accel_backend.spec} declares no collective library, so its "
            "tensors cannot take part in a multi-process job",
            hint="run this rank on a backend with one (`accel info` lists each backend's "
                 "collective library), or, as the plugin's author, declare `collective_backend` "
                 "(\"gloo\" for arrays in host memory)")
    STATE.timeout_s = float(timeout_s)
    if dist.is_initialized():
        rank, world_size, STATE.owns_default = dist.get_rank(), dist.get_world_size(), False
        control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    else:
        if master_addr is not None:
            os.environ["MASTER_ADDR"] = str(master_addr)
        if master_port is not None:
            os.environ["MASTER_PORT"] = str(master_port)
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise DistributedError(f"rank {rank} of {world_size}: {' and '.join(missing)} not set",
                                   hint="launch with torchrun (accel train --nproc-per-node N), or "
                                        "pass master_addr= and master_port=")
        control_timeout = datetime.timedelta(seconds=max(timeout_s, CONTROL_TIMEOUT_MIN_S))
        try:
            dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world_size,
                                    timeout=control_timeout)
        except Exception as exc:
            raise DistributedError(
                f"rank {rank} of {world_size} could not join the job at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}",
                hint="check that every rank started and can reach MASTER_ADDR:MASTER_PORT") from None
        STATE.owns_default, control = True, None
    STATE.control = control
    fleet = exchange_strings(f"{accel_backend.spec}|{own}")
    specs = tuple(f.split("|")[0] for f in fleet)
    libraries = {f.split("|")[1] for f in fleet}
    comm = libraries.pop() if len(libraries) == 1 else "gloo"  # a mixed fleet meets in host memory
    if not dist.is_backend_available(comm):
        raise DistributedError(
            f"rank {rank} ({accel_backend.spec}): torch.distributed has no {comm!r} backend here",
            hint=f"install {LIBRARY_SOURCES.get(comm, 'the vendor extension that registers ' + comm)}")
    STATE.data = dist.new_group(backend=comm, timeout=datetime.timedelta(seconds=timeout_s))
    STATE.fleet = specs
    STATE.info = DistInfo(rank, world_size, local_rank, comm, accel_backend.spec)
    from accel.distributed.engine import Engine
    from accel.ops.collective import ENGINE

    ENGINE.install(Engine(STATE.data, comm, rank, world_size, timeout_s))
    return STATE.info


def _already_started() -> bool:
    try:
        import torch.distributed as dist
    except Exception:
        return False
    return dist.is_available() and dist.is_initialized()


def exchange_strings(text: str) -> list[str]:
    """Every rank's `text` (at most NAME_BYTES UTF-8 bytes), in rank order, over the control
    group; a fixed-size byte tensor rather than pickled objects."""
    import torch

    dist = _torch_distributed()
    raw = text.encode()
    if len(raw) > NAME_BYTES:
        raise DistributedError(f"{text[:40]!r}... is longer than {NAME_BYTES} bytes",
                               hint="exchange a checksum of it instead (check_agreement)")
    mine = torch.zeros(NAME_BYTES, dtype=torch.uint8)
    mine[:len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    world = dist.get_world_size()
    out = torch.empty(world * NAME_BYTES, dtype=torch.uint8)
    from accel.distributed.engine import all_gather_into

    all_gather_into(out, mine, STATE.control)
    return [bytes(out[i * NAME_BYTES:(i + 1) * NAME_BYTES].tolist()).rstrip(b"\0").decode()
            for i in range(world)]


def is_initialized() -> bool:
    return STATE.info is not None


def info() -> DistInfo:
    """This process's DistInfo (one rank on the current backend before init)."""
    if STATE.info is not None:
        return STATE.info
    from accel.core.registry import current_backend

    return DistInfo(rank(), world_size(), local_rank(), None, current_backend().spec)


def rank() -> int:
    """This process's rank: from the job once initialised, else torchrun's RANK, else 0."""
    return STATE.info.rank if STATE.info is not None else _from_env("RANK", None, 0)


def world_size() -> int:
    return STATE.info.world_size if STATE.info is not None else _from_env("WORLD_SIZE", None, 1)


def local_rank() -> int:
    return STATE.info.local_rank if STATE.info is not None else _from_env("LOCAL_RANK", None, 0)


def fleet() -> tuple[str, ...]:
    """Every rank's accel backend spec in rank order (what a mixed-fleet report names)."""
    if STATE.info is None:
        from accel.core.registry import current_backend

        return (current_backend().spec,)
    return STATE.fleet


def barrier() -> None:
    """Wait for every rank (no-op for one rank)."""
    if STATE.info is None or STATE.info.world_size == 1:
        return
    from accel.distributed.engine import run_guarded

    dist = _torch_distributed()
    run_guarded("barrier", lambda: dist.barrier(group=STATE.control), STATE.info.rank,
                STATE.info.world_size, max(STATE.timeout_s, CONTROL_TIMEOUT_MIN_S))


def shutdown() -> None:
    """Leave the job: destroy the groups this module made; the next init starts afresh."""
    from accel.ops.collective import ENGINE

    ENGINE.install(None)
    if STATE.info is not None and STATE.info.world_size > 1:
        dist = _torch_distributed()
        if dist.is_initialized():
            for group in (STATE.data, STATE.control):
                if group is not None:
                    try:
                        dist.destroy_process_group(group)
                    except Exception:  # a group that failed (timed out) may not destroy cleanly
                        pass
            if STATE.owns_default:
                dist.destroy_process_group()
    STATE.__init__()
