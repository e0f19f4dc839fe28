"""The torchft Lighthouse: the one process that forms quorums from replica heartbeats.

For a one-machine job `accel train --fault-tolerant` starts it in the launcher process. For many
machines run it once, on a host every replica can reach, and pass its address to each replica
(docs/fault-tolerance.md):

    python -m accel.distributed.fault_tolerance.lighthouse --port 29510 --min-replicas 1
    # or torchft's own binary: torchft_lighthouse --min_replicas 1 --bind [::]:29510
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from accel.core.errors import AccelError
from accel.distributed.fault_tolerance.config import FaultToleranceConfig

QUORUM_TICK_MS = 50  # how often the lighthouse re-checks a pending quorum


class LighthouseError(AccelError):
    """The torchft lighthouse could not start (port taken, torchft missing)."""


def start_lighthouse(cfg: FaultToleranceConfig, port: int = 0, host: str = "[::]"):
    """A running torchft LighthouseServer; `.address()` is what replicas get as TORCHFT_LIGHTHOUSE,
    `.shutdown()` stops it."""
    os.environ.setdefault("RUST_LOG", "warn")  # before torchft loads: it logs every quorum at info
    try:
        from torchft.coordination import LighthouseServer
    except ImportError as exc:
        raise LighthouseError(f"fault-tolerant training needs torchft: {exc}",
                              hint="pip install 'accel-layer[ft]' (torchft>=0.2)") from None
    try:
        return LighthouseServer(bind=f"{host}:{port}", min_replicas=cfg.min_replicas,
                                join_timeout_ms=int(cfg.join_timeout_s * 1000),
                                quorum_tick_ms=QUORUM_TICK_MS,
                                heartbeat_timeout_ms=int(cfg.heartbeat_timeout_s * 1000))
    except Exception as exc:  # the Rust server raises RuntimeError with the OS reason
        raise LighthouseError(f"the torchft lighthouse could not listen on {host}:{port}: {exc}",
                              hint="pick a free --port, or point replicas at a running lighthouse") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m accel.distributed.fault_tolerance.lighthouse",
                                description="Run the torchft lighthouse for a many-machine job.")
    p.add_argument("--port", type=int, default=29510)
    p.add_argument("--host", default="[::]")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--heartbeat-timeout", type=float, default=FaultToleranceConfig.heartbeat_timeout_s)
    p.add_argument("--join-timeout", type=float, default=FaultToleranceConfig.join_timeout_s)
    args = p.parse_args(argv)
    cfg = FaultToleranceConfig(replicas=max(1, args.min_replicas), min_replicas=args.min_replicas,
                               heartbeat_timeout_s=args.heartbeat_timeout, join_timeout_s=args.join_timeout)
    try:
        server = start_lighthouse(cfg, args.port, args.host)
    except AccelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"lighthouse: {server.address()}  (export TORCHFT_LIGHTHOUSE={server.address()})", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
