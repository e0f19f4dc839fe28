"""Data-parallel training throughput for `accel bench --section distributed`: `accel train` on 1
and 2 ranks (gloo) with the same global batch, per backend, each in a fresh process (2 ranks
through `accel train --nproc-per-node 2`, i.e. torchrun). Figures come from each run's
training.json: tokens/s over the time spent in training steps (start-up, evaluation and
checkpoint writes excluded) and the share of that time rank 0 spent waiting for the gradient
all-reduce and the loss gather. On a host shared with other jobs the wall figures measure the
share of the CPU a job gets as much as its speed (the scheduler gives a 2-process job two
shares), so each row also has tokens per CPU-second of all ranks together (rank 0's process CPU
time in training steps × ranks): the cost of the same work on 1 and on 2 ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

GLOBAL_BATCH, SEQ, STEPS_FULL, STEPS_QUICK = 8, 64, 30, 8


def _run(backend: str, ranks: int, steps: int, seed: int, extra: list[str]) -> dict:
    from accel.cli.train import default_data

    with tempfile.TemporaryDirectory(prefix="accel-bench-train-") as tmp:
        out = os.path.join(tmp, "run")
        launch = ["--nproc-per-node", str(ranks)] if ranks > 1 else []
        cmd = [sys.executable, "-m", "accel", "train", *launch, "--model-config", "micro", "--data", default_data(),
               "--backend", backend, "--global-batch-size", str(GLOBAL_BATCH), "--seq-len", str(SEQ),
               "--steps", str(steps), "--warmup", "2", "--eval-every", "0", "--save-every", str(steps),
               "--seed", str(seed), "--no-progress", "--out", out, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
        with open(os.path.join(out, "training.json")) as f:
            summary = json.load(f)
    return {"tokens_per_s": summary["tokens_per_s"], "step_seconds": summary["step_seconds"],
            "comm_share": summary["comm_seconds"] / max(summary["step_seconds"], 1e-9),
            "tokens_per_cpu_s": summary["tokens"] / max(summary["step_cpu_seconds"] * ranks, 1e-9),
            "optimizer_bytes_per_rank": summary["optimizer_bytes_per_rank"]}


def training_rows(settings, log, backends=("numpy", "torch:cpu")) -> list[dict]:
    steps = STEPS_QUICK if settings.quick else STEPS_FULL
    rows = []
    for backend in backends:
        for ranks, extra, label in ((1, [], "1 rank"), (2, [], "2 ranks"), (2, ["--zero", "1"], "2 ranks, ZeRO-1"),
                                    (2, ["--deterministic-reduction"], "2 ranks, deterministic reduction")):
            log(f"distributed training: {backend}, {label} ...")
            rows.append({"backend": backend, "ranks": ranks, "mode": label, "global_batch": GLOBAL_BATCH,
                         "seq_len": SEQ, "steps": steps, **_run(backend, ranks, steps, settings.seed, extra)})
    return rows
