"""Helpers of the fault-tolerance tests: start a real `accel train --fault-tolerant` job (lighthouse,
one torchrun per replica, gloo), watch its event files, kill its processes, and rebuild the same
model and data in this process for the one-process replay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

import accel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = dict(model="micro", seq_len=16, batch_size=2, warmup=2, lr=3e-3, seed=0)


def job_command(out: str, replicas: int, steps: int, global_batch: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "accel.cli.main", "train", "--fault-tolerant", "--nproc-per-node", str(replicas),
            "--model-config", MODEL["model"], "--backend", "numpy", "--steps", str(steps),
            "--batch-size", str(MODEL["batch_size"]), "--seq-len", str(MODEL["seq_len"]),
            "--global-batch-size", str(global_batch), "--warmup", str(MODEL["warmup"]),
            "--lr", str(MODEL["lr"]), "--seed", str(MODEL["seed"]), "--out", out, "--no-progress", *extra]


def start_job(out: str, replicas: int, steps: int, global_batch: int, *extra: str, env: dict | None = None):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    log = open(out + ".log", "w")
    return subprocess.Popen(job_command(out, replicas, steps, global_batch, *extra), env=full_env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def events(out: str) -> list[dict]:
    from accel.distributed.fault_tolerance.events import read_events

    return read_events(out)


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def live_pid(out: str, replica: str) -> int | None:
    """The pid of the replica's newest process (from its last start event)."""
    starts = [e for e in events(out) if e["kind"] == "start" and e["replica"] == replica]
    return starts[-1]["pid"] if starts else None


def committed(out: str) -> list[dict]:
    return [e for e in events(out) if e["kind"] == "commit"]


def finish(proc, out: str, timeout: float = 180) -> dict:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"job did not finish in {timeout}s; log: {open(out + '.log').read()[-3000:]}")
    assert code == 0, open(out + ".log").read()[-3000:]
    with open(os.path.join(out, "training.json")) as f:
        return json.load(f)


def final_states(out: str) -> dict[str, dict[str, np.ndarray]]:
    """Each finished replica's parameters and AdamW moments, as written at its end."""
    from accel.io.safetensors import load_safetensors

    folder = os.path.join(out, "ft")
    return {name[len("final-"):-len(".safetensors")]:
            {k: accel.asnumpy(v) for k, v in load_safetensors(os.path.join(folder, name), "numpy").items()}
            for name in sorted(os.listdir(folder)) if name.startswith("final-")}


def replay(record: dict, steps: int, global_batch: int, replicas: int, participants=None):
    """The one-process run with the participation the job recorded (or another one)."""
    from accel.cli.train import _model_config, default_data
    from accel.io.tokenizer import Tokenizer
    from accel import models
    from accel.models.llama import causal_lm_loss, init_params
    from accel.train.data import TokenData
    from accel.train.fault_tolerant import replay as replay_run
    from accel.train.loop import TrainConfig

    tokenizer = Tokenizer.from_file(models.bundled_path())
    config = _model_config(MODEL["model"], tokenizer)
    cfg = TrainConfig(**{**record["train_config"]})
    assert cfg.steps == steps
    params = init_params(config, cfg.seed, "numpy", accel.float32)
    data = TokenData.from_text_file(default_data(), tokenizer)
    return replay_run(causal_lm_loss(config), params, data, cfg, "numpy", global_batch=global_batch,
                      replicas=replicas, policy=record["fault_tolerance"]["batch_policy"],
                      participants=participants or record["history"]["participants"])
