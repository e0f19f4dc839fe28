"""Real processes for the distributed tests: torch.multiprocessing starts the ranks, which meet
through torch.distributed's own env:// rendezvous on 127.0.0.1 and a free port (gloo)."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback


PRELOAD = ["torch", "torch.distributed", "numpy", "accel", "accel.distributed", "accel.distributed.conformance",
           "accel.conformance.judge", "accel.backends.numpy.backend", "accel.backends.torch.backend",
           "accel.backends.npusim", "accel.backends.jax.backend", "spawn_ranks"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenario, backends: list[str], **kwargs) -> list[dict]:
    """Run `scenario(backend, **kwargs)` on len(backends) ranks; each rank's JSON result."""
    import multiprocessing

    import torch.multiprocessing as mp

    # A fork server imports torch, accel and the backends once; each rank is a fork of it (not
    # of pytest, whose threads a fork must not copy), so no rank pays the imports again.
    multiprocessing.set_forkserver_preload(PRELOAD)
    world = len(backends)
    out_dir = tempfile.mkdtemp(prefix="accel-ranks-")
    mp.start_processes(_rank_main, args=(world, free_port(), backends, scenario, kwargs, out_dir),
                       nprocs=world, join=True, start_method="forkserver")
    results = []
    for r in range(world):
        with open(os.path.join(out_dir, f"{r}.json")) as f:
            results.append(json.load(f))
    return results


def _rank_main(rank, world, port, backends, scenario, kwargs, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import warnings

    warnings.filterwarnings("ignore", message=".*reduces in float32.*")  # expected: float8 sums
    try:
        result = scenario(backends[rank], **kwargs)
    except BaseException:
        result = {"crashed": traceback.format_exc()}
    path = os.path.join(out_dir, f"{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)
    if rank == 0:  # rank 0 hosts the job's store: the others may still need it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                os.path.exists(os.path.join(out_dir, f"{r}.json")) for r in range(world)):
            time.sleep(0.05)
    os._exit(0)  # skip interpreter teardown: a group left behind by a failure test may block it
