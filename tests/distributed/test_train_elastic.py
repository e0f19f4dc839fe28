"""Elastic training: a run saved at N ranks resumes at M ranks with the same global batch
(micro-batch and accumulation re-derived), continuing the uninterrupted curve (1e-6 relative in
float32; bitwise with --deterministic-reduction); the consumed samples are the same multiset;
an impossible size is refused with the valid ones. Real processes on gloo."""
from __future__ import annotations

import collections
import glob

import numpy as np
import pytest

from tests.distributed.test_train_data_parallel import REL
from tests.training.distributed_runs import COMMON, run_ranks, summary, tokenizer_dir

G, STEPS = 12, 6      # 12 divides among 4, 3, 2 and 1 ranks; 3 segments of 2 steps


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenizer_dir(tmp_path_factory.mktemp("tok"))


def argv(tokenizer, spec, out, steps, *extra):
    return [*COMMON, *tokenizer, "--backend", spec, "--global-batch-size", str(G), "--max-micro-batch", "3",
            "--steps", str(steps), "--schedule-steps", str(STEPS), "--save-every", "2", "--out", str(out),
            *map(str, extra)]


def resized(tokenizer, tmp_path, spec, sizes, *extra):
    """STEPS steps in len(sizes) segments on sizes[i] ranks, each resumed from the last; returns
    (uninterrupted run dir, resized run dir)."""
    straight, out = tmp_path / "straight", tmp_path / "resized"
    log = {"ACCEL_TRAIN_SAMPLE_LOG": str(tmp_path / "straight-samples")}
    assert run_ranks(sizes[0], argv(tokenizer, spec, straight, STEPS, *extra), env=log) == [0] * sizes[0]
    per = STEPS // len(sizes)
    log = {"ACCEL_TRAIN_SAMPLE_LOG": str(tmp_path / "resized-samples")}
    assert run_ranks(sizes[0], argv(tokenizer, spec, out, per, *extra), env=log) == [0] * sizes[0]
    for i, world in enumerate(sizes[1:], start=2):
        resume = ["--resume", str(out), "--steps", str(per * i), "--no-progress"]
        assert run_ranks(world, resume, env=log) == [0] * world
    return straight, out


def samples(tmp_path, name):
    ids = collections.Counter()
    for path in glob.glob(str(tmp_path / f"{name}-samples.*")):
        ids.update(int(i) for line in open(path) for i in line.split())
    return ids


def test_4_2_4_continues_the_4_rank_curve(tokenizer, tmp_path):
    straight, out = resized(tokenizer, tmp_path, "numpy", [4, 2, 4])
    a, b = np.array(summary(out)["history"]["losses"]), np.array(summary(straight)["history"]["losses"])
    assert len(a) == STEPS and np.max(np.abs(a - b) / b) <= REL
    segments = summary(out)["history"]["segments"]
    assert [(s["start_step"], s["world_size"], s["micro_batch"], s["grad_accum"]) for s in segments] == \
        [(0, 4, 3, 1), (2, 2, 3, 2), (4, 4, 3, 1)]
    assert samples(tmp_path, "resized") == samples(tmp_path, "straight") == collections.Counter(range(G * STEPS))


@pytest.mark.parametrize("spec", ["numpy", pytest.param("torch:cpu", marks=pytest.mark.slow)])
def test_4_3_1_bitwise_with_deterministic_reduction(tokenizer, tmp_path, spec):
    straight, out = resized(tokenizer, tmp_path, spec, [4, 3, 1], "--deterministic-reduction",
                            "--reduction-shards", 12)
    assert summary(out)["history"]["losses"] == summary(straight)["history"]["losses"]   # bitwise
    from accel.io.safetensors import load_safetensors

    wa, wb = load_safetensors(str(out / "model.safetensors")), load_safetensors(str(straight / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wb)
    assert [s["world_size"] for s in summary(out)["history"]["segments"]] == [4, 3, 1]


def test_4_3_1_torch_cpu_within_float32_rounding(tokenizer, tmp_path):
    straight, out = resized(tokenizer, tmp_path, "torch:cpu", [4, 3, 1])
    a, b = np.array(summary(out)["history"]["losses"]), np.array(summary(straight)["history"]["losses"])
    assert np.max(np.abs(a - b) / b) <= REL


def test_an_impossible_size_is_refused_with_the_valid_ones(tokenizer, tmp_path, capfd):
    out = tmp_path / "run"
    assert run_ranks(2, argv(tokenizer, "numpy", out, 2)) == [0, 0]
    assert run_ranks(5, ["--resume", str(out), "--steps", "4", "--no-progress"]) == [1] * 5
    err = capfd.readouterr().err
    assert "the global batch 12 does not divide among 5 ranks" in err
    assert "valid world sizes: 1, 2, 3, 4, 6, 12" in err and "Traceback" not in err
