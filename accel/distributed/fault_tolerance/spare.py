"""Device failover inside one process: when the rank's device raises `accel.DeviceError`, its
state moves to a spare device from an in-memory snapshot (taken after the last committed step)
and the step's local work runs again there. The other replicas only see this one arrive late at
the all-reduce; nothing is redone on them.

One spare per rank: after a move the failed device is not used again (a second fault on the
spare fails the step the ordinary way: the replica reports the error and the step is redone).
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import accel
from accel.core.errors import DeviceError
from accel.distributed.fault_tolerance.state import ReplicaState

T = TypeVar("T")


class DeviceFailover:
    def __init__(self, backend, spare: str = "", events=None) -> None:
        self.backend = accel.get_backend(backend)
        self.spare = spare
        self.events = events
        self._snapshot: dict | None = None
        self.moves: list[dict] = []

    def remember(self, state: ReplicaState) -> None:
        """Keep a host copy of the committed state (only when there is a spare to move to)."""
        if self.spare:
            self._snapshot = state.snapshot()

    def run(self, compute: Callable[[ReplicaState], T], state: ReplicaState) -> tuple[T, ReplicaState]:
        """compute(state) on this rank's device; after a DeviceError, on the spare from the snapshot."""
        try:
            return compute(state), state
        except DeviceError as exc:
            if not self.spare or self._snapshot is None:
                raise
            started = time.perf_counter()
            failed, self.backend = self.backend.spec, accel.get_backend(self.spare)
            self.spare = ""
            state = ReplicaState.from_snapshot(self._snapshot, self.backend)
            result = compute(state)
            move = {"failed_device": failed, "spare": self.backend.spec, "step": state.step,
                    "error": str(exc).splitlines()[0], "retry_seconds": time.perf_counter() - started}
            self.moves.append(move)
            if self.events is not None:
                self.events.emit("device_retry", **move)
            return result, state
