"""The one-machine launcher of a fault-tolerant job: the torchft lighthouse in this process and one
torchrun per replica group (as torchft's examples run them), each with `--max-restarts`, so a
replica that dies is restarted by torchrun alone while the others keep training; the restarted
process heals from a live peer.

Why one torchrun per replica: torchrun restarts its whole worker group when one worker fails,
which is right inside a replica group and wrong across replicas.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from accel.distributed.fault_tolerance.config import FaultToleranceConfig
from accel.distributed.fault_tolerance.lighthouse import start_lighthouse

FINISH_GRACE_S = 30.0   # after one replica finished, how long the others get to finish too


def torchrun_command(argv: list[str], cfg: FaultToleranceConfig) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", "1", "--max-restarts", str(cfg.max_restarts), "--monitor-interval", "0.1",
            "-m", "accel.cli.main", *argv]


def replica_env(cfg: FaultToleranceConfig, replica: int, lighthouse: str) -> dict[str, str]:
    env = {**os.environ, **cfg.to_env(), "ACCEL_FT_LIGHTHOUSE": lighthouse, "TORCHFT_LIGHTHOUSE": lighthouse,
           "ACCEL_FT_REPLICA": str(replica)}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("RUST_LOG", "warn")  # torchft's Rust side logs every quorum at info
    return env


def launch(argv: list[str], cfg: FaultToleranceConfig, *, on_start=None) -> int:
    """Run `accel <argv>` as `cfg.replicas` replica groups; 0 when the job finished.

    `on_start(procs)` (tests, benchmarks) gets the torchrun processes once they are started."""
    server = None
    lighthouse = cfg.lighthouse
    if not lighthouse:
        server = start_lighthouse(cfg)
        lighthouse = server.address()
    print(f"[accel ft] lighthouse {lighthouse}; {cfg.replicas} replicas, min {cfg.min_replicas}, "
          f"torchrun --max-restarts {cfg.max_restarts} each", file=sys.stderr, flush=True)
    procs = [subprocess.Popen(torchrun_command(argv, cfg), env=replica_env(cfg, r, lighthouse))
             for r in range(cfg.replicas)]
    if on_start is not None:
        on_start(procs)
    try:
        return _wait(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if server is not None:
            server.shutdown()


def _wait(procs: list[subprocess.Popen]) -> int:
    """Done when one replica finished cleanly (the others have the same state and follow within the
    grace period; a replica still restarting then has nothing left to train). Failed when every
    replica exhausted its restarts."""
    finished_at = None
    while True:
        codes = [p.poll() for p in procs]
        if any(c == 0 for c in codes) and finished_at is None:
            finished_at = time.monotonic()
        if all(c is not None for c in codes):
            return 0 if any(c == 0 for c in codes) else max(c for c in codes)
        if finished_at is not None and time.monotonic() - finished_at > FINISH_GRACE_S:
            return 0
        time.sleep(0.1)
