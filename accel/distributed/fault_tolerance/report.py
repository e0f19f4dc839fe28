"""The job's fault-tolerance record, folded from every replica's event file: what training.json
keeps and the summary `accel train` prints at the end.

A step counts as committed when any replica logged its commit. Its samples are the union of the
shares that the participants of the committing quorum logged before their all-reduce (a replica
killed inside it, or right after voting, may not have logged its commit, but its share was logged
and went into the all-reduce). `check_exactly_once` verifies that the committed steps are 0..S-1, each once, and
that their samples are exactly the ids S·G .. expected, each once.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from accel.distributed.fault_tolerance.events import read_events


def fold(out: str) -> dict:
    events = read_events(out)
    commits: dict[int, dict] = {}
    quorum_of: dict[int, object] = {}
    shares = defaultdict(list)  # (step, quorum) -> [start, stop) shares
    last_step_record = {}
    for e in events:
        if e["kind"] == "attempt":
            # a relaunch from a checkpoint at step k: what earlier attempts committed from k on
            # was lost with them and is trained again (quorum ids restart with the new lighthouse)
            k = e["from_step"]
            for table in (commits, quorum_of):
                for s in [s for s in table if s >= k]:
                    del table[s]
            for key in [key for key in shares if key[0] >= k]:
                del shares[key]
            last_step_record.clear()
        elif e["kind"] == "step":
            shares[(e["step"], e["quorum"])].append((e["replica"], tuple(e["samples"])))
            last_step_record[(e["replica"], e["pid"], e["step"])] = e["quorum"]
        elif e["kind"] == "commit" and e["step"] not in commits:
            # the committing quorum: that of the last `step` record of the committing replica
            commits[e["step"]] = e
            quorum_of[e["step"]] = last_step_record.get((e["replica"], e["pid"], e["step"]))
    samples = {s: sorted({share for _, share in shares[(s, quorum_of[s])]}) for s in commits}
    starts = [e for e in events if e["kind"] == "start"]
    aborted = [e for e in events if e["kind"] == "step_aborted"]
    heals = [e for e in events if e["kind"] == "heal"]
    device = [e for e in events if e["kind"] == "device_retry"]
    done = [e for e in events if e["kind"] == "done"]
    first, last = (events[0]["t"], events[-1]["t"]) if events else (0.0, 0.0)
    wall = max(last - first, 1e-9)
    failures = _failures(events)
    committed_time = max((d.get("seconds", 0.0) for d in done), default=0.0)
    return {
        "committed_steps": len(commits),
        "losses": [commits[s]["loss"] for s in sorted(commits)],
        "participants": [commits[s]["participants"] for s in sorted(commits)],
        "samples": {str(s): samples[s] for s in sorted(commits)},
        "restarts": sum(1 for e in starts if e.get("restart", 0) > 0),
        "failures": failures,
        "steps_redone": len({(e["step"], e["replica"], e["pid"], round(e["t"], 3)) for e in aborted}),
        "steps_redone_by_step": dict(Counter(str(e["step"]) for e in aborted)),
        "heals": [{"replica": e["replica"], "from_step": e["from_step"], "to_step": e["to_step"],
                   "seconds": e["seconds"], "ok": e["ok"]} for e in heals],
        "device_retries": [{k: e[k] for k in ("replica", "failed_device", "spare", "step", "error",
                                              "retry_seconds")} for e in device],
        "attempts": [{"from_step": e["from_step"], "checkpoint": e.get("checkpoint"), "t": e["t"]}
                     for e in events if e["kind"] == "attempt"],
        "checkpoints": [{k: e[k] for k in ("replica", "step", "path", "participants", "seconds")}
                        for e in events if e["kind"] == "checkpoint"],
        "wall_seconds": wall,
        # of the last attempt: the time between a lost job and its --resume is not the job's
        "effective_time_share": _effective_share(*_last_attempt(events)),
        "replica_seconds": committed_time,
    }


def _failures(events: list[dict]) -> list[dict]:
    """One entry per failure: the step it hit, every replica that noticed it (an aborted step, or
    a quorum that shrank without one) and after how long. A survivor stuck in a collective until
    its timeout reports the same failure later than one whose connection broke at once."""
    by_step: dict[int, dict] = {}
    seen: dict[str, int] = {}

    def note(step: int, replica: str, cause: str, after: float, t: float) -> dict:
        entry = by_step.setdefault(step, {"step": step, "cause": cause, "t": t, "detected_by": {}})
        entry["detected_by"].setdefault(replica, round(after, 4))
        return entry

    last_commit: dict[str, int] = {}
    for e in events:
        if e["kind"] == "commit":
            last_commit[e["replica"]] = e["step"]
        elif e["kind"] == "quorum":
            before, seen[e["replica"]] = seen.get(e["replica"]), e["participants"]
            # a shrink seen by a replica that was live at the previous step (not one that was
            # itself out and has just healed back in)
            if before is not None and e["participants"] < before and last_commit.get(e["replica"]) == e["step"] - 1:
                entry = note(e["step"], e["replica"], "a replica stopped heartbeating and left the quorum",
                             e["since_last_commit"], e["t"])
                entry.setdefault("quorum", f"{before} -> {e['participants']} replicas")
        elif e["kind"] in ("step_aborted", "quorum_failed"):
            note(e["step"], e["replica"], e["cause"], e["detected_after"], e["t"])
        elif e["kind"] == "device_retry":
            entry = note(e["step"], e["replica"], e["error"], 0.0, e["t"])
            entry["recovered_in_process"] = True
    out = []
    for entry in sorted(by_step.values(), key=lambda x: x["t"]):
        times = list(entry["detected_by"].values())
        out.append({**entry, "detected_after_s": min(times), "last_detected_after_s": max(times)})
    return out


def _last_attempt(events: list[dict]) -> tuple[list[dict], float]:
    starts = [e["t"] for e in events if e["kind"] == "attempt"]
    recent = [e for e in events if not starts or e["t"] >= starts[-1]]
    return recent, max(recent[-1]["t"] - recent[0]["t"], 1e-9) if recent else 1e-9


def _effective_share(events: list[dict], wall: float) -> float:
    """Committed progress over wall time: the time of the first commit of each step (as the job
    sees it) against the whole run, i.e. 1 - (time lost to failures, redone steps, heals) / wall."""
    commit_times = sorted({e["step"]: e["t"] for e in reversed(events) if e["kind"] == "commit"}.values())
    if len(commit_times) < 2:
        return 1.0 if commit_times else 0.0
    gaps = [b - a for a, b in zip(commit_times, commit_times[1:])]
    typical = sorted(gaps)[len(gaps) // 2]
    return min(1.0, typical * len(commit_times) / max(commit_times[-1] - commit_times[0] + typical, 1e-9))


def check_exactly_once(record: dict, steps: int, global_batch: int, policy_batch=None) -> list[str]:
    """Problems with the committed record ([] if none): a missing or doubled step or sample."""
    problems = []
    if record["committed_steps"] != steps:
        problems.append(f"{record['committed_steps']} committed steps, expected {steps}")
    for s in range(steps):
        shares = record["samples"].get(str(s))
        if not shares:
            problems.append(f"step {s}: no samples recorded")
            continue
        ids = Counter(i for a, b in shares for i in range(a, b))
        expect = policy_batch(s) if policy_batch else global_batch
        want = Counter(range(s * global_batch, s * global_batch + expect))
        if ids != want:
            problems.append(f"step {s}: samples {sorted(ids.elements())[:8]}... != expected "
                            f"{s * global_batch}..{s * global_batch + expect - 1}")
    return problems


def summary_line(record: dict) -> str:
    heal_s = [h["seconds"] for h in record["heals"]]
    return (f"fault tolerance: {record['committed_steps']} steps committed, {len(record['failures'])} failures, "
            f"{record['restarts']} restarts, {len(heal_s)} heals"
            + (f" (median {sorted(heal_s)[len(heal_s) // 2]:.2f}s)" if heal_s else "")
            + f", {record['steps_redone']} step attempts redone, {len(record['device_retries'])} device retries; "
            f"effective-time share {100 * record['effective_time_share']:.1f}%")
