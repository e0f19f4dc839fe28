"""`accel train --fp8` (delayed scaling) on data-parallel ranks all-reduces the amax histories
(max) after every step, so every rank quantizes with the whole global batch's scales; checked
against the independent reference, a one-process run of the same global batch.

Where the comparison starts: step 1 cannot match, on any implementation of this recipe. A
history is empty at step 1, so each GEMM falls back to current scaling, which on a rank is the
amax of its own half of the batch, in one process the whole batch's (Transformer Engine uses a
scale of 1 there instead; either way the ranks do not quantize like one process at step 1). So
the one-process run continues the two-rank run from its step-4 checkpoint, and steps 5-8 and
the final weights are compared.

Why those must match: the input amax of the whole batch is the max of the ranks' input amax,
and the weight is the same everywhere, so after the all-reduce those histories are the one
process's. Output gradients: a micro-batch's loss is the mean over its tokens, so a rank's (4
sequences) gradient is exactly twice the one-process (8 sequences) gradient of the same rows;
resuming at micro-batch 8 scales the checkpoint's gradient histories by 4/8 (exact), and a scale
half as large quantizes half the values to the same float8 codes. What remains is the order of
the float32 sums, so the data-parallel tolerances of tests/distributed/test_train_data_parallel.py
apply. Measured, 2 ranks: losses within 3.9e-8 relative (numpy) and 1.2e-7 (torch:cpu),
weights 2.5e-8 norm-wise; 4 ranks 5.9e-8 / 7.7e-8 and 2.7e-8. Without the all-reduce the same
continuation is off by 1.3e-4 (losses) and 4.3e-3 (weights), without the rescale on resume by
9.3e-5 and 1.4e-2 (2 ranks; 4 ranks alike): the tolerances catch both.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from accel.cli.main import main
from accel.cli.train import default_data
from accel.io import safetensors as st
from tests.distributed.test_train_data_parallel import REL, WEIGHT_REL, assert_same_run
from tests.precision.test_train_resume import _delayed_policy
from tests.training.distributed_runs import run_ranks, summary

pytest.importorskip("torch.distributed")

G = 8   # global batch: micro-batch 8 in one process, 4 on each of 2 ranks, 2 on each of 4
STEPS, RESUME_AT = 8, 4
ARGS = ["--model-config", "micro", "--data", default_data(), "--seq-len", "16", "--lr", "3e-3",
        "--warmup", "2", "--eval-every", "0", "--no-progress", "--global-batch-size", str(G)]


def _ranks_run(tmp_path, spec: str, world: int) -> str:
    """`world` ranks, 8 steps, a checkpoint at step 4."""
    out = tmp_path / f"ranks-{world}"
    policy = _delayed_policy(tmp_path / "policy.json")
    assert run_ranks(world, [*ARGS, "--backend", spec, "--fp8", policy, "--steps", str(STEPS),
                             "--save-every", str(RESUME_AT), "--out", str(out)]) == [0] * world
    return str(out)


def _continue(run: str, out, world: int, *extra) -> str:
    """Steps 5-8 from `run`'s step-4 checkpoint on `world` ranks (micro-batch G / world)."""
    checkpoint = os.path.join(run, f"checkpoint-{RESUME_AT:06d}")
    assert run_ranks(world, ["--resume", checkpoint, "--out", str(out), "--steps", str(STEPS), "--no-progress",
                             "--batch-size", str(G // world), *map(str, extra)]) == [0] * world
    return str(out)


def _histories(run: str) -> dict[str, np.ndarray]:
    saved = st.load_safetensors(os.path.join(run, f"checkpoint-{STEPS:06d}", "state.safetensors"), "numpy")
    return {k: v.numpy() for k, v in saved.items()}


def _far(got: str, want: str) -> tuple[float, float]:
    """(max relative loss difference, max per-tensor norm-wise weight difference)."""
    a = np.array(summary(got)["history"]["losses"])
    b = np.array(summary(want)["history"]["losses"])
    wa = st.load_safetensors(os.path.join(got, "model.safetensors"), "numpy")
    wb = st.load_safetensors(os.path.join(want, "model.safetensors"), "numpy")
    weights = max(np.linalg.norm(wa[k].numpy() - wb[k].numpy()) / np.linalg.norm(wb[k].numpy()) for k in wb)
    return float(np.max(np.abs(a - b) / np.abs(b))), float(weights)


def _check_against_one_process(tmp_path, monkeypatch, spec: str, world: int) -> None:
    ranks = _ranks_run(tmp_path, spec, world)
    one = _continue(ranks, tmp_path / "one", 1)
    assert summary(one)["history"]["segments"][-1]["micro_batch"] == G
    assert_same_run(ranks, one, REL, WEIGHT_REL)
    # the histories themselves: input and weight amax as one process recorded them over the
    # whole batch; gradient amax `world` times the one process's (each rank's loss is the mean
    # over 1/world of the batch)
    mine, ref = _histories(ranks), _histories(one)
    assert set(mine) == set(ref) and len(ref) == 2 * 7 * 3
    for key, want in ref.items():
        factor = world if key.endswith(".g") else 1
        np.testing.assert_allclose(mine[key], factor * want, rtol=1e-5, err_msg=key)

    # the same continuation with the all-reduce switched off: each rank scales from its own half
    import accel.precision.scaling as scaling

    monkeypatch.setattr(scaling.DelayedScalingState, "all_reduce_amax", lambda self: None)
    alone = _continue(ranks, tmp_path / "no-all-reduce", world)
    losses, weights = _far(alone, one)
    assert losses > 10 * REL and weights > 10 * WEIGHT_REL, (losses, weights)
    monkeypatch.undo()

    # and the one process without the gradient-history rescale on resume
    from accel import precision

    monkeypatch.setattr(precision, "rescale_gradient_amax", lambda *a, **k: None)
    unscaled = _continue(ranks, tmp_path / "no-rescale", 1)
    losses, weights = _far(unscaled, one)
    assert losses > 10 * REL and weights > 10 * WEIGHT_REL, (losses, weights)


def test_two_ranks_quantize_like_one_process(tmp_path, monkeypatch):
    _check_against_one_process(tmp_path, monkeypatch, "numpy", 2)


@pytest.mark.slow   # the same on torch:cpu, 2 and 4 ranks: ~5 s each on 2 cores
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_quantize_like_one_process_torch(tmp_path, monkeypatch, world):
    _check_against_one_process(tmp_path, monkeypatch, "torch:cpu", world)


@pytest.mark.slow   # torchrun's agent and two fresh interpreters: ~10 s on 2 cores
def test_through_torchrun(tmp_path):
    """The same through `accel train --nproc-per-node 2` (torch.distributed.run starts the ranks)."""
    import subprocess
    import sys

    policy = _delayed_policy(tmp_path / "policy.json")
    ranks = tmp_path / "torchrun"
    done = subprocess.run([sys.executable, "-m", "accel", "train", "--nproc-per-node", "2", *ARGS, "--backend",
                           "numpy", "--fp8", policy, "--steps", str(STEPS), "--save-every", str(RESUME_AT),
                           "--out", str(ranks)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary(ranks)["world_size"] == 2
    assert_same_run(str(ranks), _continue(str(ranks), tmp_path / "one", 1), REL, WEIGHT_REL)


def test_zero1_continues_like_one_process(tmp_path):
    """ZeRO-1 reduce-scatters inside its optimizer; the all-reduce of the histories follows it."""
    ranks = _ranks_run(tmp_path, "numpy", 2)
    zero = _continue(ranks, tmp_path / "zero", 2, "--zero", 1)
    one = _continue(ranks, tmp_path / "one", 1)
    assert summary(zero)["history"]["segments"][-1]["zero"] == 1
    assert_same_run(zero, one, REL, WEIGHT_REL)


def test_fault_tolerant_refuses_fp8(tmp_path, capsys):
    """The torchft loop runs no FP8 (its histories would have to survive heals and aborted
    steps): --fp8 with --fault-tolerant, or resuming an FP8 run that way, is refused up front."""
    policy = _delayed_policy(tmp_path / "policy.json")
    code = main(["train", "--fault-tolerant", "--fp8", policy, "--out", str(tmp_path / "ft")])
    err = capsys.readouterr().err
    assert code == 1 and f"--fp8 {policy} cannot be combined with --fault-tolerant" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2   # the error and its hint
    run = tmp_path / "fp8-run"
    assert main(["train", *ARGS, "--backend", "numpy", "--fp8", policy, "--steps", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["train", "--fault-tolerant", "--resume", str(run), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "resuming a run trained with --fp8" in err and "cannot be combined" in err
    with open(run / "training.json") as f:
        assert json.load(f)["history"]["losses"] and not os.path.isdir(run / "ft")


def test_ranks_that_would_not_all_reduce_alike_are_refused(tmp_path, capfd):
    """Every rank must call the same collectives: a rank without the --fp8 policy, or one whose
    backend stores no float8 (it would run the layers unquantized and keep no histories), stops
    the job at start on every rank, naming the rank, instead of hanging in the all-reduce."""
    policy = _delayed_policy(tmp_path / "policy.json")
    base = [*ARGS, "--steps", "2", "--backend", "numpy"]
    assert run_ranks(2, [*base, "--out", str(tmp_path / "a")], extra={1: ["--fp8", policy]}) == [1, 1]
    err = capfd.readouterr().err
    assert "ranks disagree on FP8 policy: rank(s) 1 differ from rank(s) 0" in err and "Traceback" not in err
    codes = run_ranks(2, [*ARGS, "--steps", "2", "--backend", "numpy,npusim", "--fp8", policy,
                          "--out", str(tmp_path / "b")])
    err = capfd.readouterr().err
    assert codes == [1, 1] and err.count("rank(s) 1 (npusim") == 2 and "store no float8_e4m3fn" in err
