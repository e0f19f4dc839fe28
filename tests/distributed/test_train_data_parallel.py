"""Data-parallel `accel train` on real processes (gloo, 127.0.0.1): N ranks with the same global
batch give the one-process run's losses and weights (the independent reference: one process,
no collectives), with ZeRO-1 too at 1/N of the optimizer memory; a mixed fleet (numpy +
torch:cpu + npusim) agrees with a numpy-only run; a 2-rank checkpoint resumes on 1 rank on
another backend; `accel train --nproc-per-node 2` goes through torchrun itself."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from accel.cli.main import main
from accel.io.safetensors import load_safetensors
from tests.training.distributed_runs import COMMON, run_ranks, summary, tokenizer_dir

# float32 losses and weights of N ranks against one process: only the order of the float32
# sums differs (micro-batch split, gloo's reduction). Measured over 20 steps: losses max
# relative difference 8e-8 (numpy, 2 ranks) to 1.5e-7 (torch:cpu, 4 ranks); weights max
# |diff| 1.3e-7 = 1.2e-6 of the largest weight, and in a 3-rank run (G=6) a few elements of one
# MLP matrix moved by 5e-6: AdamW divides by sqrt(v), which magnifies the rounding of near-zero
# gradients. So weights are compared per tensor, norm-wise (|Δw|₂ / |w|₂), at WEIGHT_REL;
# --deterministic-reduction is the mode with bitwise-equal weights (test_train_elastic.py).
REL = 1e-6
WEIGHT_REL = 1e-5   # measured: 4.1e-7 (2 ranks) to 3.9e-6 (3 ranks, G=6, one tensor of 24k elements)
STEPS = 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenizer_dir(tmp_path_factory.mktemp("tok"))


def args(tokenizer, spec, out, *extra, steps=STEPS, batch=4):
    return [*COMMON, *tokenizer, "--backend", spec, "--global-batch-size", str(batch), "--steps", str(steps),
            "--schedule-steps", str(STEPS), "--out", str(out), *map(str, extra)]


_refs: dict = {}


def reference(tokenizer, tmp_path_factory, spec, batch=4):
    """The one-process run (cached per backend and batch)."""
    key = (spec, batch)
    if key not in _refs:
        out = tmp_path_factory.mktemp("ref") / "run"
        assert main(["train", *args(tokenizer, spec, out, batch=batch)]) == 0
        _refs[key] = out
    return _refs[key]


def assert_same_run(got, want, rel=REL, weight_rel=WEIGHT_REL):
    a, b = np.array(summary(got)["history"]["losses"]), np.array(summary(want)["history"]["losses"])
    assert a.shape == b.shape
    assert np.max(np.abs(a - b) / np.abs(b)) <= rel, (a, b)
    wa, wb = load_safetensors(os.path.join(got, "model.safetensors")), load_safetensors(os.path.join(want, "model.safetensors"))
    assert set(wa) == set(wb)
    for name in wb:
        x, y = wa[name].numpy(), wb[name].numpy()
        assert np.linalg.norm(x - y) <= weight_rel * np.linalg.norm(y), name


@pytest.mark.parametrize("spec, world", [("numpy", 2), ("numpy", 4), ("torch:cpu", 2), ("torch:cpu", 4)])
def test_ranks_give_the_one_process_losses_and_weights(tokenizer, tmp_path_factory, tmp_path, spec, world):
    ref = reference(tokenizer, tmp_path_factory, spec)
    assert run_ranks(world, args(tokenizer, spec, tmp_path / "dp")) == [0] * world
    assert_same_run(tmp_path / "dp", ref)
    s = summary(tmp_path / "dp")
    assert s["world_size"] == world and s["history"]["segments"][0]["micro_batch"] == 4 // world


def test_zero1_same_curve_with_a_shard_of_the_optimizer_state(tokenizer, tmp_path_factory, tmp_path):
    ref = reference(tokenizer, tmp_path_factory, "numpy")
    assert run_ranks(2, args(tokenizer, "numpy", tmp_path / "z", "--zero", 1)) == [0, 0]
    assert_same_run(tmp_path / "z", ref)
    whole, shard = summary(ref)["optimizer_bytes_per_rank"], summary(tmp_path / "z")["optimizer_bytes_per_rank"]
    params = summary(ref)["parameters"]
    assert whole == 2 * 4 * params                       # m and v, float32
    assert shard == 2 * 4 * -(-params // 2)              # half of them (padded to an even count)
    # the checkpoint holds the gathered, whole state: it resumes unsharded on one rank
    assert main(["train", "--resume", str(tmp_path / "z" / "checkpoint-000020"), "--steps", "21",
                 "--schedule-steps", str(STEPS), "--out", str(tmp_path / "z1"), "--no-progress"]) == 0


def test_mixed_fleet_agrees_with_numpy_only(tokenizer, tmp_path_factory, tmp_path):
    ref = reference(tokenizer, tmp_path_factory, "numpy", batch=6)
    mixed = args(tokenizer, "numpy,torch:cpu,npusim", tmp_path / "mixed", batch=6)
    assert run_ranks(3, mixed) == [0, 0, 0]
    s = summary(tmp_path / "mixed")
    assert s["backends"][0] == "numpy" and s["backends"][1] == "torch:cpu" and s["backends"][2].startswith("npusim")
    # each rank computes in its backend's float32 (conformance tolerances), the mean is shared
    assert_same_run(tmp_path / "mixed", ref, rel=1e-5, weight_rel=1e-4)


def test_a_two_rank_checkpoint_resumes_on_one_rank_on_another_backend(tokenizer, tmp_path_factory, tmp_path):
    ref = reference(tokenizer, tmp_path_factory, "numpy")
    out = tmp_path / "two"
    assert run_ranks(2, args(tokenizer, "numpy", out, steps=10)) == [0, 0]
    assert main(["train", "--resume", str(out), "--backend", "torch:cpu", "--steps", str(STEPS), "--no-progress"]) == 0
    s = summary(out)
    assert [g["world_size"] for g in s["history"]["segments"]] == [2, 1]
    assert s["backend"] == "torch:cpu" and s["resumed_from"]["world_size"] == 2
    # another backend: the cross-backend float32 tolerance of tests/training/test_train.py
    assert_same_run(out, ref, rel=1e-5, weight_rel=1e-4)


def test_ranks_that_disagree_are_named(tokenizer, tmp_path, capfd):
    other = tmp_path / "other.txt"
    other.write_text(open(COMMON[COMMON.index("--data") + 1], encoding="utf-8").read()[:20000])
    codes = run_ranks(2, args(tokenizer, "numpy", tmp_path / "x", steps=2), extra={1: ["--data", str(other)]})
    assert codes == [1, 1]
    err = capfd.readouterr().err
    assert "ranks disagree on data file: rank(s) 1 differ from rank(s) 0" in err and "Traceback" not in err


@pytest.mark.slow   # torchrun's agent and two fresh interpreters: ~20 s on 2 cores
def test_accel_train_nproc_per_node_runs_torchrun(tokenizer, tmp_path_factory, tmp_path):
    ref = reference(tokenizer, tmp_path_factory, "numpy")
    out = tmp_path / "tr"
    done = subprocess.run([sys.executable, "-m", "accel", "train", "--nproc-per-node", "2",
                           *args(tokenizer, "numpy", out, steps=3)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = summary(out)["history"]["losses"], summary(ref)["history"]["losses"][:3]
    np.testing.assert_allclose(a, b, rtol=REL)
    assert summary(out)["world_size"] == 2
    # one progress line per run, from rank 0 only
    assert done.stderr.count("global batch 4 = micro-batch 2") == 1
