"""Fault-tolerant training that loses the whole job: every replica and the launcher (with its
lighthouse and torchrun agents) are SIGKILLed after a checkpoint, and `--resume` continues from
the newest complete checkpoint that one replica wrote.

Checked against independent facts: the committed losses and the final parameters equal the
one-process replay with the same participation (accel/train/fault_tolerant.py `replay`), which
never stops; every sample of every committed step is trained exactly once across the two
attempts (the steps the killed attempt committed after the checkpoint are voided and trained
again); and the same checkpoint resumes in the normal (non-fault-tolerant) loop.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from ft_jobs import ROOT, committed, events, final_states, finish, job_command, replay, wait_for

pytest.importorskip("torchft")

from accel.distributed.fault_tolerance.report import check_exactly_once  # noqa: E402

STEPS, BATCH, REPLICAS, SAVE_EVERY, KILL_AT = 8, 4, 2, 3, 5


def _start(out: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """The launcher in its own process group (its torchrun agents share it; the replicas, which
    torchrun starts in sessions of their own, are killed by pid)."""
    log = open(out + ".log", "a")
    return subprocess.Popen(job_command(out, REPLICAS, STEPS, BATCH, "--save-every", str(SAVE_EVERY), *extra),
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a killed replica whose parent died too stays a zombie
        return f.read().split(")")[-1].split()[0] != "Z"


def _kill_whole_job(proc: subprocess.Popen, out: str) -> list[int]:
    replicas = sorted({e["pid"] for e in events(out) if e["kind"] == "start"})
    for pid in replicas:
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    wait_for(lambda: not any(_alive(p) for p in replicas), 30, "every replica to die")
    return replicas


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Attempt 1 runs until replica 0 waits before the all-reduce of step KILL_AT (steps 0..4
    committed, the checkpoint of step 3 written, step 3 and 4 committed after it), then the whole
    job is SIGKILLed; attempt 2 is the same command with `--auto-resume`."""
    out = str(tmp_path_factory.mktemp("ft_resume") / "run")
    first = _start(out, env={"ACCEL_FT_PAUSE": f"replica=0,point=allreduce,step={KILL_AT},seconds=60,life=0"})
    wait_for(lambda: [e for e in events(out) if e["kind"] == "paused"], 120, f"step {KILL_AT}", first)
    killed = _kill_whole_job(first, out)
    before = {e["step"] for e in committed(out)}
    assert before == set(range(KILL_AT)), before
    assert not os.path.exists(os.path.join(out, "training.json"))  # the job never finished
    second = _start(out, "--auto-resume")  # finds the newest complete checkpoint in --out
    record = finish(second, out)
    return out, record, killed


def test_whole_job_killed_resumes_from_the_checkpoint_exactly(killed_and_resumed):
    out, record, killed = killed_and_resumed
    ft = record["fault_tolerance"]
    newest = (KILL_AT // SAVE_EVERY) * SAVE_EVERY  # 3: the newest checkpoint before the kill
    assert [a["from_step"] for a in ft["attempts"]] == [0, newest]
    assert ft["attempts"][1]["checkpoint"].endswith(f"checkpoint-{newest:06d}")
    assert record["resumed_from"]["step"] == newest
    # the new processes started from the checkpoint (not from step 0, not by healing)
    resumed = [e for e in events(out) if e["kind"] == "resumed"]
    assert len(resumed) == REPLICAS and {e["step"] for e in resumed} == {newest}
    assert not {e["pid"] for e in resumed} & set(killed)
    # steps newest..KILL_AT-1 were committed by the killed attempt, voided, and trained again:
    # each committed step's samples exactly once, none lost
    assert ft["committed_steps"] == STEPS and check_exactly_once(ft, STEPS, BATCH) == []
    # one replica per due step wrote a checkpoint, after the commit: participant 0 of the quorum
    saves = [(c["step"], c["replica"]) for c in ft["checkpoints"]]
    assert saves == [(3, "0"), (6, "0"), (STEPS, "0")], saves
    assert record["history"]["participants"] == [REPLICAS] * STEPS
    assert [(g["start_step"], g["end_step"]) for g in record["history"]["segments"]] == [(0, newest), (newest, STEPS)]
    losses, state = replay(record, STEPS, BATCH, REPLICAS)
    assert record["history"]["losses"] == losses  # the one-process run that never stopped
    finals = final_states(out)
    assert sorted(finals) == ["0", "1"]
    for name, value in state.params.items():
        for replica in finals:
            assert np.array_equal(finals[replica][f"params.{name}"], np.asarray(value)), (replica, name)


def test_fault_tolerant_checkpoint_resumes_in_the_normal_loop(killed_and_resumed, tmp_path):
    """FT -> normal: the checkpoint of step 3 (written by attempt 1) continues in the plain loop
    on one process: it starts at sample 3·G, keeps the checkpoint's loss history, and its losses
    follow the fault-tolerant run's. Not bitwise: the plain loop averages its micro-batch
    gradients in float32 where the fault-tolerant step sums float32-rounded float64 shares."""
    out, record, _ = killed_and_resumed
    folder = os.path.join(out, "checkpoint-000003")
    normal, samples = str(tmp_path / "normal"), str(tmp_path / "samples")
    subprocess.run([sys.executable, "-m", "accel.cli.main", "train", "--resume", folder, "--out", normal,
                    "--backend", "numpy", "--no-progress"], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "ACCEL_TRAIN_SAMPLE_LOG": samples}, timeout=120)
    with open(os.path.join(normal, "training.json")) as f:
        plain = json.load(f)
    with open(samples + ".0") as f:
        ids = [int(i) for line in f for i in line.split()]
    assert ids == list(range(3 * BATCH, STEPS * BATCH))  # the cursor continues: nothing twice, none lost
    ft_losses = record["history"]["losses"]
    assert plain["history"]["losses"][:3] == ft_losses[:3]
    np.testing.assert_allclose(plain["history"]["losses"][3:], ft_losses[3:], rtol=1e-5)


def test_resume_refuses_before_starting_anything(killed_and_resumed, tmp_path, capsys):
    """Nothing left to train, or another data file: refused in the launcher, one line, no
    lighthouse, no replica started (each would fail and torchrun would restart it)."""
    from accel.cli.main import main

    out, _, _ = killed_and_resumed
    attempts = len([e for e in events(out) if e["kind"] == "attempt"])
    code = main(["train", "--fault-tolerant", "--nproc-per-node", "2", "--resume", out, "--steps", str(STEPS)])
    err = capsys.readouterr().err
    assert code == 1 and f"already at step {STEPS}" in err and "Traceback" not in err
    other = tmp_path / "other.txt"
    other.write_text("another text " * 500, encoding="utf-8")
    code = main(["train", "--fault-tolerant", "--nproc-per-node", "2", "--resume", out, "--steps", "20",
                 "--data", str(other)])
    assert code == 1 and "sha256 differs" in capsys.readouterr().err
    assert len([e for e in events(out) if e["kind"] == "attempt"]) == attempts


def _plain_train(out: str, steps: int, *extra: str, env: dict | None = None) -> dict:
    from ft_jobs import MODEL

    subprocess.run([sys.executable, "-m", "accel.cli.main", "train", "--model-config", MODEL["model"],
                    "--backend", "numpy", "--steps", str(steps), "--batch-size", str(MODEL["batch_size"]),
                    "--seq-len", str(MODEL["seq_len"]), "--global-batch-size", str(BATCH),
                    "--warmup", str(MODEL["warmup"]), "--lr", str(MODEL["lr"]), "--seed", str(MODEL["seed"]),
                    "--out", out, "--no-progress", *extra], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)
    with open(os.path.join(out, "training.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_normal_loop_checkpoint_resumes_fault_tolerant(tmp_path):
    """normal -> FT: a plain one-process run saves at step 3 and goes on to step 8 (the reference);
    `accel train --fault-tolerant --resume <its checkpoint-000003>` on 2 replicas continues from
    it: samples 3·G.. exactly once per step, the plain run's first 3 losses kept, and the losses
    of steps 3..7 those of the plain run to float32 rounding (the two loops sum micro-batch
    gradients in different precisions, see the test above)."""
    plain_out, ft_out = str(tmp_path / "plain"), str(tmp_path / "ft")
    plain = _plain_train(plain_out, STEPS, "--save-every", "3", "--keep-checkpoints", "5")
    proc = subprocess.Popen(job_command(ft_out, REPLICAS, STEPS, BATCH, "--resume",
                                        os.path.join(plain_out, "checkpoint-000003")),
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=open(ft_out + ".log", "w"),
                            stderr=subprocess.STDOUT, cwd=ROOT)
    record = finish(proc, ft_out)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == STEPS - 3
    for step in range(3, STEPS):
        ids = sorted(i for a, b in ft["samples"][str(step)] for i in range(a, b))
        assert ids == list(range(step * BATCH, (step + 1) * BATCH)), step
    assert record["history"]["losses"][:3] == plain["history"]["losses"][:3]
    np.testing.assert_allclose(record["history"]["losses"][3:], plain["history"]["losses"][3:], rtol=1e-5)
    assert record["history"]["participants"][3:] == [REPLICAS] * (STEPS - 3)


@pytest.mark.slow
def test_writer_killed_mid_save_leaves_the_previous_checkpoint_and_the_job_goes_on(tmp_path):
    """The writer (replica 0) is SIGKILLed halfway through writing checkpoint 4 (after step 3
    committed: the step stays committed). The other replica goes on, torchrun restarts replica 0
    and it heals; checkpoint 4 never becomes complete, the later ones are written by whoever is
    participant 0 then, and the newest complete checkpoint resumes to the replay's weights."""
    from accel.train.checkpoints import CRASH_ENV, complete_checkpoints, load_checkpoint

    out, steps = str(tmp_path / "run"), 6
    proc = subprocess.Popen(job_command(out, REPLICAS, steps, BATCH, "--save-every", "2", "--keep-checkpoints", "5"),
                            env={**os.environ, "OMP_NUM_THREADS": "1", CRASH_ENV: "mid-save:4"},
                            stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    record = finish(proc, out)
    ft = record["fault_tolerance"]
    assert ft["committed_steps"] == steps and check_exactly_once(ft, steps, BATCH) == []
    assert ft["restarts"] >= 1
    assert complete_checkpoints(out) == ["checkpoint-000002", "checkpoint-000006"]
    assert [c["step"] for c in ft["checkpoints"]] == [2, 6]
    losses, state = replay(record, steps, BATCH, REPLICAS)
    assert record["history"]["losses"] == losses
    params, _, saved = load_checkpoint(os.path.join(out, "checkpoint-000006"), "numpy")
    assert saved["history"]["losses"] == losses
    for name, value in state.params.items():
        assert np.array_equal(np.asarray(params[name]), np.asarray(value)), name
