"""Fault-tolerant training with real failures: real processes (one torchrun per replica, torchft's
lighthouse and Manager over gloo), killed with SIGKILL or stopped with SIGSTOP from here.

Each test checks the job against independent facts: the committed step count, every sample of
every committed step exactly once (from the replicas' own logs), bitwise-equal parameters and
AdamW state on every replica after healing, and the committed losses against a one-process replay
with the same participation (float64 partial sums make that exact; docs/fault-tolerance.md).
"""
from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest

from ft_jobs import committed, events, final_states, finish, live_pid, replay, start_job, wait_for

pytest.importorskip("torchft")

from accel.distributed.fault_tolerance.report import check_exactly_once  # noqa: E402


def assert_bitwise_equal_replicas(out: str, expect: int) -> None:
    states = final_states(out)
    assert len(states) >= expect, sorted(states)
    names = sorted(states)
    first = states[names[0]]
    for other in names[1:]:
        assert sorted(states[other]) == sorted(first)
        for key, value in first.items():
            assert np.array_equal(states[other][key], value), f"replica {other} differs in {key}"
    assert any(k.startswith("m.") for k in first) and any(k.startswith("v.") for k in first)


def test_hang_then_kill_in_allreduce_then_restart_and_heal(tmp_path):
    """The CI case, one job of 3 replicas (--ft-min-replicas 2):

    1. replica 2 hangs (SIGSTOP): its peers' all-reduce fails after --ft-timeout, the lighthouse
       drops it after --ft-heartbeat-timeout, and replicas 0 and 1 go on without it;
    2. replica 1 is SIGKILLed at step 6 while replica 0 waits inside the all-reduce: the step is
       discarded; replica 0 alone is below the minimum and waits; torchrun restarts replica 1;
    3. the restarted replica 1 heals from replica 0 (parameters, AdamW state, step, data cursor)
       and the two go on; then replica 2 continues (SIGCONT), finds its step failed, heals too, and
       the three finish together.
    """
    out, steps, batch, timeout, heartbeat = str(tmp_path / "run"), 40, 6, 2.0, 1.0
    proc = start_job(out, 3, steps, batch, "--ft-min-replicas", "2", "--ft-timeout", str(timeout),
                     "--ft-heartbeat-timeout", str(heartbeat),
                     env={"ACCEL_FT_PAUSE": "replica=1,point=allreduce,step=6,seconds=60,life=0"})
    wait_for(lambda: {e["step"] for e in committed(out)} >= {0, 1}, 120, "two committed steps", proc)
    hung = live_pid(out, "2")
    os.kill(hung, signal.SIGSTOP)
    stopped = time.time()
    try:
        first_without = wait_for(
            lambda: [e for e in committed(out) if e["t"] > stopped and e["participants"] == 2],
            30, "a step committed without the hung replica", proc)[0]
        # the stalled collective fails after the timeout; the quorum forms once the heartbeat is stale
        assert first_without["t"] - stopped < timeout + heartbeat + 3.0
        paused = wait_for(lambda: [e for e in events(out) if e["kind"] == "paused"], 60, "step 6", proc)
        os.kill(paused[0]["pid"], signal.SIGKILL)
        # replica 0 alone is below the minimum: nothing commits until the restarted replica 1 heals
        wait_for(lambda: [e for e in events(out) if e["kind"] == "heal" and e["replica"] == "1"], 120,
                 "torchrun to restart replica 1 and replica 1 to heal", proc)
    finally:
        os.kill(hung, signal.SIGCONT)
    record = finish(proc, out)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == steps and check_exactly_once(ft, steps, batch) == []
    # the hang costs an aborted step or only a quorum change, depending on where it caught replica 2
    assert ft["restarts"] == 1 and ft["steps_redone"] >= 1 and len(ft["failures"]) >= 2
    healed = {h["replica"] for h in ft["heals"] if h["ok"] and h["to_step"] >= 6}
    assert healed == {"1", "2"}, ft["heals"]
    participants = record["history"]["participants"]
    assert 2 in participants and participants[-1] == 3
    assert_bitwise_equal_replicas(out, 3)
    losses, state = replay(record, steps, batch, 3)
    assert record["history"]["losses"] == losses  # the one-process run with this participation
    final = final_states(out)["0"]
    for name, value in state.params.items():
        assert np.array_equal(final[f"params.{name}"], np.asarray(value)), name
    # the fault-free run (3 participants every step) differs by float32 rounding only
    clean, _ = replay(record, steps, batch, 3, participants=[3] * steps)
    np.testing.assert_allclose(record["history"]["losses"], clean, rtol=1e-5)


@pytest.mark.slow
def test_sigkill_during_allreduce_restarts_heals_and_matches_fault_free(tmp_path):
    """One of 3 replicas is killed while its peers wait in the all-reduce of step 4; torchrun
    restarts it, it heals from a live peer, and with --ft-min-replicas 3 no step commits without
    it, so the run's participation (and therefore every loss) is that of the fault-free run."""
    out, steps, batch = str(tmp_path / "run"), 10, 6
    proc = start_job(out, 3, steps, batch, "--ft-min-replicas", "3", "--ft-timeout", "10",
                     env={"ACCEL_FT_PAUSE": "replica=1,point=allreduce,step=4,seconds=30,life=0"})
    paused = wait_for(lambda: [e for e in events(out) if e["kind"] == "paused"], 120, "the pause", proc)
    os.kill(paused[0]["pid"], signal.SIGKILL)
    record = finish(proc, out)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == steps and check_exactly_once(ft, steps, batch) == []
    assert ft["restarts"] == 1 and ft["steps_redone"] >= 1
    assert any(h["from_step"] == 0 and h["to_step"] >= 4 and h["ok"] for h in ft["heals"])
    assert record["history"]["participants"] == [3] * steps
    assert_bitwise_equal_replicas(out, 3)
    losses, state = replay(record, steps, batch, 3)
    assert record["history"]["losses"] == losses  # the fault-free one-process run, exactly
    final = final_states(out)["0"]
    for name, value in state.params.items():
        assert np.array_equal(final[f"params.{name}"], np.asarray(value)), name


@pytest.mark.slow
def test_sigkill_of_the_healing_source_during_state_transfer(tmp_path):
    """Replica 1 dies in the all-reduce of step 3; when its restart heals, the replica sending it
    the state is killed mid-transfer: the heal fails, the step is redone, torchrun restarts the
    sender too, and both heal from the third (--ft-min-replicas 3: nothing commits meanwhile)."""
    out, steps, batch = str(tmp_path / "run"), 8, 6
    proc = start_job(out, 3, steps, batch, "--ft-min-replicas", "3", "--ft-timeout", "5", env={
        "ACCEL_FT_PAUSE": "replica=1,point=allreduce,step=3,seconds=60,life=0;"
                          "point=send_state,step=3,seconds=60,life=0"})
    first = wait_for(lambda: [e for e in events(out) if e["kind"] == "paused"], 120, "step 3", proc)[0]
    os.kill(first["pid"], signal.SIGKILL)
    sender = wait_for(lambda: [e for e in events(out) if e["kind"] == "paused" and e["point"] == "send_state"],
                      120, "a paused sender", proc)[0]
    os.kill(sender["pid"], signal.SIGKILL)
    record = finish(proc, out)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == steps and check_exactly_once(ft, steps, batch) == []
    assert ft["restarts"] == 2
    assert any(e["kind"] == "quorum_failed" and e["replica"] == "1" for e in events(out))  # the broken heal
    assert {h["replica"] for h in ft["heals"] if h["ok"] and h["to_step"] == 3} >= {"1", sender["replica"]}
    assert_bitwise_equal_replicas(out, 3)
    losses, _ = replay(record, steps, batch, 3)
    assert record["history"]["losses"] == losses


def _live_replicas(out: str) -> list[tuple[str, int]]:
    """(replica, pid) of the processes that are alive and have committed since they started."""
    live = []
    evs = events(out)
    for replica in sorted({e["replica"] for e in evs if e["kind"] == "start"}):  # not the launcher's
        starts = [e for e in evs if e["kind"] == "start" and e["replica"] == replica]
        pid, since = starts[-1]["pid"], starts[-1]["t"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        if any(e["kind"] == "commit" and e["replica"] == replica and e["t"] > since for e in evs):
            live.append((replica, pid))
    return live


@pytest.mark.slow
def test_chaos_twenty_kills(tmp_path):
    """20 SIGKILLs of random live replicas at random moments (2-8 s apart, never the last live one:
    with no live peer there is nothing to heal from, docs/fault-tolerance.md), over a few minutes:
    zero lost committed steps, the exact sample multiset, the losses of the one-process replay.
    Command: pytest -m slow tests/distributed/test_fault_tolerance.py -k chaos -p no:cacheprovider"""
    out, steps, batch, kills = str(tmp_path / "run"), 6000, 6, 20
    proc = start_job(out, 3, steps, batch, "--ft-timeout", "5", "--ft-max-restarts", "100")
    rng = random.Random(0)
    wait_for(lambda: len(committed(out)) >= 10, 120, "first steps", proc)
    done = 0
    while done < kills and proc.poll() is None:
        time.sleep(rng.uniform(2.0, 8.0))
        live = _live_replicas(out)
        if len(live) < 2:
            continue
        _, pid = rng.choice(live)
        try:
            os.kill(pid, signal.SIGKILL)
            done += 1
        except ProcessLookupError:
            pass
    assert done >= kills, f"only {done} kills before the job ended: raise the step count"
    record = finish(proc, out, timeout=1200)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == steps and check_exactly_once(ft, steps, batch) == []
    assert ft["restarts"] == kills
    losses, _ = replay(record, steps, batch, 3)
    assert record["history"]["losses"] == losses
