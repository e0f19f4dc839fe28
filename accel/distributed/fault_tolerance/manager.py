"""A torchft Manager for one replica group of one process: gloo process group that torchft
reconfigures on every quorum change, PGTransport for live healing (tensors as raw bytes over the
group, no checkpoint file), the lighthouse address and the replica's id.

Under torchrun (one torchrun per replica, as torchft's examples) the replica group's TCPStore is
torchrun's (MASTER_ADDR / MASTER_PORT); in a bare process the replica hosts its own store.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable

from accel.core.errors import AccelError
from accel.distributed.fault_tolerance.config import FaultToleranceConfig

HEARTBEAT = timedelta(milliseconds=100)


class FaultToleranceSetupError(AccelError):
    """Fault-tolerant training cannot start: no lighthouse, several processes per replica group."""


def replica_id_from_env() -> str:
    """ACCEL_FT_REPLICA (set by the launcher), else torchft's REPLICA_GROUP_ID, else "0"."""
    return os.environ.get("ACCEL_FT_REPLICA") or os.environ.get("REPLICA_GROUP_ID") or "0"


def _store():
    """(host, port, keep-alive) of the replica group's TCPStore."""
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    return "127.0.0.1", store.port, store


def make_manager(cfg: FaultToleranceConfig, replica: str, state_dict: Callable[[], dict],
                 load_state_dict: Callable[[dict], None]):
    """(torchft Manager, keep-alive handle). Quorum is synchronous (`use_async_quorum=False`), so a
    replica that heals applies the peer's state before it computes the step."""
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        raise FaultToleranceSetupError(
            f"--fault-tolerant runs one process per replica group; this torchrun has WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}",
            hint="use `accel train --fault-tolerant --nproc-per-node N` (one torchrun per replica), "
                 "or torchrun --nproc-per-node 1 per replica with ACCEL_FT_REPLICA set")
    if not cfg.lighthouse:
        raise FaultToleranceSetupError(
            "no torchft lighthouse address", hint="set TORCHFT_LIGHTHOUSE=http://HOST:PORT, or start the "
            "job with `accel train --fault-tolerant --nproc-per-node N` which runs one")
    import torch
    from torchft import Manager, ProcessGroupGloo
    from torchft.checkpointing.pg_transport import PGTransport

    timeout = timedelta(seconds=cfg.timeout_s)
    host, port, keep = _store()
    pg = ProcessGroupGloo(timeout=timeout)
    transport = PGTransport(pg, timeout=timeout, device=torch.device("cpu"))
    manager = Manager(pg=pg, load_state_dict=load_state_dict, state_dict=state_dict,
                      min_replica_size=cfg.min_replicas, use_async_quorum=False, timeout=timeout,
                      quorum_timeout=timedelta(seconds=cfg.quorum_timeout_s), connect_timeout=timeout,
                      rank=0, world_size=1, store_addr=host, store_port=port,
                      lighthouse_addr=cfg.lighthouse, replica_id=f"accel_{replica}",
                      heartbeat_interval=HEARTBEAT, checkpoint_transport=transport)
    return manager, keep
