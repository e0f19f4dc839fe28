"""What happened to a replica, as one JSON line per event in `<out>/ft/replica-<id>.jsonl` and one
log line each on stderr. The launcher (or the last replica to finish) folds every replica's file
into training.json (accel/distributed/fault_tolerance/report.py).

Kinds: start (a process began; `restart` counts torchrun restarts), quorum (the participant set
changed), heal (state received from a peer), quorum_failed (the quorum or a heal raised), step_aborted (a step was not committed: the cause,
how long after the step began it was detected), device_retry (a DeviceError moved this rank to its
spare device), step (a step this replica trained: its samples, and whether it committed), resumed
(this process started from a checkpoint), checkpoint (this replica wrote one: step, path, seconds),
done. The launcher logs one `attempt` per launch (from_step: 0, or the checkpoint's step on
--resume); a resumed job appends to the same files, and an attempt voids the earlier attempts'
commits of its steps and later (report.py).
"""
from __future__ import annotations

import json
import os
import sys
import time

FT_DIR = "ft"
LAUNCHER = "launcher"   # the replica name of the launcher's own events
_QUIET_KINDS = frozenset({"step"})  # one per step: in the file, not in the log


def ft_dir(out: str) -> str:
    return os.path.join(out, FT_DIR)


class EventLog:
    def __init__(self, out: str, replica: str) -> None:
        os.makedirs(ft_dir(out), exist_ok=True)
        self.path = os.path.join(ft_dir(out), f"replica-{replica}.jsonl")
        self.replica = replica
        self._file = open(self.path, "a", encoding="utf-8")

    def emit(self, kind: str, **fields) -> dict:
        record = {"t": time.time(), "kind": kind, "replica": self.replica, "pid": os.getpid(), **fields}
        # flushed and fsynced per line: a SIGKILL right after must not lose what was written
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if kind not in _QUIET_KINDS:
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("samples",))
            print(f"[accel ft] replica {self.replica}: {kind} {detail}", file=sys.stderr, flush=True)
        return record

    def close(self) -> None:
        self._file.close()


def read_events(out: str) -> list[dict]:
    """Every replica's events, in time order (a torn last line of a killed process is skipped)."""
    folder = ft_dir(out)
    events = []
    if not os.path.isdir(folder):
        return events
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return sorted(events, key=lambda e: e["t"])
