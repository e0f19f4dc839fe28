"""Step efficiency under failure: committed steps per second of a fault-tolerant job (3 replicas
of a tiny model on gloo) with one replica SIGKILLed every 10, 30 and 60 s, against the same job
without failures, next to the analytic bound.

    .venv/bin/python benchmarks/fault_tolerance.py --window 120 --json runs/ft-bench.json

The bound for N replicas and one failure every T seconds, with the global batch kept constant:
each failure costs the survivors the detection time d plus the aborted step s, and while the
dead replica restarts and heals (r seconds) the N-1 survivors do its share too, so

    efficiency <= 1 - (d + s) / T - (r / N) / T        (when compute is the bottleneck)

d, s and r are taken from the run itself (training.json's failures, heals and commit times).
On a machine with fewer cores than replicas the survivors get the dead replica's CPU, so the
(r / N) term can vanish: the figures say which machine they ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from accel.distributed.fault_tolerance.events import read_events  # noqa: E402


def run(out: str, replicas: int, window: float, every: float | None, warmup: float, seed: int) -> dict:
    cmd = [sys.executable, "-m", "accel.cli.main", "train", "--fault-tolerant", "--nproc-per-node", str(replicas),
           "--model-config", "micro", "--backend", "numpy", "--steps", "1000000", "--batch-size", "2",
           "--seq-len", "32", "--global-batch-size", str(2 * replicas), "--out", out, "--no-progress",
           "--ft-timeout", "5", "--ft-max-restarts", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT, start_new_session=True)
    rng = random.Random(seed)
    try:
        while not os.path.exists(os.path.join(out, "ft", "committed")):
            time.sleep(0.1)
        time.sleep(warmup)
        start = time.time()
        kills, next_kill = [], start + (every or 1e18) * rng.uniform(0.5, 1.0)
        while time.time() < start + window:
            if time.time() >= next_kill:
                victim = str(rng.randrange(replicas))
                starts = [e for e in read_events(out) if e["kind"] == "start" and e["replica"] == victim]
                try:
                    os.kill(starts[-1]["pid"], signal.SIGKILL)
                    kills.append(time.time())
                except ProcessLookupError:
                    pass
                next_kill += every
            time.sleep(0.05)
        end = time.time()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    return measure(out, start, end, kills, replicas)


def measure(out: str, start: float, end: float, kills: list[float], replicas: int) -> dict:
    events = read_events(out)
    first_commit = {}
    for e in events:
        if e["kind"] == "commit":
            first_commit.setdefault(e["step"], e["t"])
    times = sorted(t for t in first_commit.values() if start <= t < end)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    step_s = gaps[len(gaps) // 2] if gaps else float("nan")
    detect = []
    for k in kills:  # kill -> the first survivor that saw its step fail
        seen = [e["t"] - k for e in events if e["kind"] == "step_aborted" and 0 <= e["t"] - k < 15]
        if seen:
            detect.append(min(seen))
    rejoin = []
    for k in kills:  # kill -> the restarted replica's heal (it trains again)
        heals = [e["t"] for e in events if e["kind"] == "heal" and e["t"] > k and e["from_step"] == 0]
        if heals:
            rejoin.append(min(heals) - k)
    return {"window_s": end - start, "committed_steps": len(times), "steps_per_s": len(times) / (end - start),
            "median_step_s": step_s, "kills": len(kills),
            "detect_s": sum(detect) / len(detect) if detect else None,
            "rejoin_s": sum(rejoin) / len(rejoin) if rejoin else None}


def bound(every: float, replicas: int, step_s: float, detect_s: float, rejoin_s: float) -> float:
    return max(0.0, 1.0 - (detect_s + step_s) / every - (rejoin_s / replicas) / every)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--window", type=float, default=120.0, help="seconds measured per case")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--every", type=float, nargs="*", default=[10.0, 30.0, 60.0])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["none"] = run(os.path.join(tmp, "clean"), args.replicas, args.window, None, args.warmup, 0)
        for every in args.every:
            rows[f"{every:g}"] = run(os.path.join(tmp, f"every{every:g}"), args.replicas, args.window, every,
                                     args.warmup, int(every))
    base = rows["none"]["steps_per_s"]
    measured = [r for k, r in rows.items() if k != "none"]
    detect = [r["detect_s"] for r in measured if r["detect_s"] is not None]
    rejoin = [r["rejoin_s"] for r in measured if r["rejoin_s"] is not None]
    d = sum(detect) / len(detect) if detect else 0.0
    r_ = sum(rejoin) / len(rejoin) if rejoin else 0.0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.replicas} replicas, "
          f"micro model, numpy backend, gloo; window {args.window:g}s per case")
    print(f"{'failure every':>14} {'kills':>5} {'steps/s':>8} {'efficiency':>10} {'bound':>6}")
    for key, row in rows.items():
        eff = row["steps_per_s"] / base
        b = 1.0 if key == "none" else bound(float(key), args.replicas, rows["none"]["median_step_s"], d, r_)
        row["efficiency"], row["bound"] = eff, b
        print(f"{key + ('' if key == 'none' else ' s'):>14} {row['kills']:>5} {row['steps_per_s']:>8.2f} "
              f"{100 * eff:>9.1f}% {100 * b:>5.1f}%")
    print(f"measured: detection {d:.2f}s, kill -> rejoined {r_:.1f}s, fault-free step "
          f"{rows['none']['median_step_s'] * 1000:.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "detect_s": d, "rejoin_s": r_, "replicas": args.replicas,
                       "window_s": args.window}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
