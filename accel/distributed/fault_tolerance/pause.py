"""A test hook that widens a window so a test can kill a replica exactly there (the kill itself is
a real SIGKILL/SIGSTOP from outside). Off unless ACCEL_FT_PAUSE is set, e.g.

    ACCEL_FT_PAUSE="replica=1,point=allreduce,step=4,seconds=5,life=0"

pauses replica 1 for 5 s just before its all-reduce of step 4 in its first life (restart 0), after
writing a `paused` event with its pid. Several plans are separated by ";"; each point pauses once
per process. Points: allreduce (the peers are already waiting inside
the collective), send_state (this replica is the healing source, mid-transfer), recv_state (this
replica received a peer's state and has not applied it yet).
"""
from __future__ import annotations

import os
import time

POINTS = ("allreduce", "send_state", "recv_state")
_fired: set[str] = set()  # each point pauses once per process


def _plans() -> list[dict]:
    raw = os.environ.get("ACCEL_FT_PAUSE")
    plans = [dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
             for spec in (raw or "").split(";") if spec.strip()]
    for plan in plans:
        if plan.get("point") not in POINTS:
            raise ValueError(f"ACCEL_FT_PAUSE point must be one of {POINTS}, got {plan.get('point')!r}")
    return plans


def maybe_pause(point: str, step: int, replica: str, restart: int, events) -> None:
    for plan in _plans():
        if plan["point"] != point or plan.get("replica", replica) != replica or point in _fired:
            continue
        if int(plan.get("step", step)) != step or int(plan.get("life", restart)) != restart:
            continue
        _fired.add(point)
        events.emit("paused", point=point, step=step, seconds=float(plan.get("seconds", 5)))
        time.sleep(float(plan.get("seconds", 5)))
