"""`accel train` end to end: progress, eval, atomic portable checkpoints, exact resume, the same
loss curve on every backend, and resuming on another backend."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import accel
import accel.models
from accel.cli.main import main
from accel.core.errors import AccelError

CORPUS = os.path.join(os.path.dirname(accel.models.__file__), "data", "stories.txt")
# the micro preset with a small trained tokenizer: a step takes milliseconds on any backend
BASE = ["--model-config", "micro", "--data", CORPUS, "--train-tokenizer", "300", "--batch-size", "4",
        "--seq-len", "32", "--lr", "3e-3", "--warmup", "5", "--no-progress"]
# Cross-backend tolerance on per-step losses (float32, loss ~4-6). Backends differ only in float32
# rounding order (matmul blocking, reduction trees). Measured max |diff| vs numpy over 50 steps:
# jax 1.9e-6, torch:cpu 9.5e-7, onnxruntime 9.5e-7, npusim 4.8e-7. 1e-4 leaves a 50x margin for
# other BLAS builds and is still ~500x smaller than one step of progress (~0.05), so a wrong
# gradient cannot hide in it.
CROSS_BACKEND_ATOL = 1e-4


def run(*argv):
    assert main(["train", *BASE, *map(str, argv)]) == 0


def history(out):
    with open(os.path.join(out, "training.json")) as f:
        return json.load(f)


def test_train_writes_model_checkpoints_and_learns(backend, tmp_path, capsys):
    out = tmp_path / "run"
    run("--backend", backend.spec, "--steps", 30, "--eval-every", 15, "--save-every", 10, "--out", out)
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "eval" in printed
    summary = history(out)
    losses = summary["history"]["losses"]
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0
    assert [e[0] for e in summary["history"]["evals"]] == [15, 30]
    assert summary["backend"] == backend.spec and summary["rng"]["kind"] == "philox"
    # the newest three checkpoints are kept, `latest` names the newest, no temporary left behind
    names = sorted(os.listdir(out))
    assert [n for n in names if n.startswith("checkpoint-")] == ["checkpoint-000010", "checkpoint-000020",
                                                                 "checkpoint-000030"]
    assert not [n for n in names if n.startswith(".")]
    assert (out / "latest").read_text().strip() == "checkpoint-000030"
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json", "tokenizer.json"):
        assert (out / "checkpoint-000030" / name).is_file()
    # the output is a model directory: it loads and generates
    model = accel.models.load_pretrained(str(out), backend="numpy")
    assert model.tokenizer is not None and model.config.vocab_size >= 300
    # the checkpoint opens with the safetensors library too (no pickle)
    from safetensors.numpy import load_file

    moments = load_file(str(out / "checkpoint-000030" / "optimizer.safetensors"))
    assert any(k.startswith("m.") for k in moments) and any(k.startswith("v.") for k in moments)


def test_resume_continues_exactly(backend, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run("--backend", backend.spec, "--steps", 12, "--eval-every", 0, "--out", straight)
    run("--backend", backend.spec, "--steps", 6, "--schedule-steps", 12, "--eval-every", 0, "--out", split)
    assert main(["train", "--resume", str(split), "--steps", "12", "--backend", backend.spec, "--no-progress"]) == 0
    a, b = history(straight)["history"]["losses"], history(split)["history"]["losses"]
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


def _other_backends():
    return [name for name in _available() if name != "numpy"]


def _available():
    from accel.testing import selected_backends

    class Config:
        def getoption(self, _):
            return []

    return selected_backends(Config())


def test_losses_agree_with_the_reference_backend_for_50_steps(backend, tmp_path):
    if backend.spec == "numpy":
        pytest.skip("the reference itself")
    ref, other = tmp_path / "ref", tmp_path / "other"
    run("--backend", "numpy", "--steps", 50, "--eval-every", 0, "--out", ref)
    run("--backend", backend.spec, "--steps", 50, "--eval-every", 0, "--out", other)
    a, b = history(ref)["history"]["losses"], history(other)["history"]["losses"]
    np.testing.assert_allclose(b, a, rtol=0, atol=CROSS_BACKEND_ATOL)


def test_resume_on_another_backend_continues_the_curve(backend, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run("--backend", "numpy", "--steps", 20, "--eval-every", 0, "--out", straight)
    run("--backend", "numpy", "--steps", 10, "--schedule-steps", 20, "--eval-every", 0, "--out", split)
    assert main(["train", "--resume", str(split), "--steps", "20", "--backend", backend.spec, "--no-progress"]) == 0
    summary = history(split)
    assert summary["backend"] == backend.spec and summary["resumed_from"]["backend"] == "numpy"
    np.testing.assert_allclose(summary["history"]["losses"], history(straight)["history"]["losses"],
                               rtol=0, atol=CROSS_BACKEND_ATOL)


def test_mixed_precision_bfloat16(backend, tmp_path):
    if accel.bfloat16 not in backend.dtypes:
        with pytest.raises(AccelError, match="bfloat16"):
            run("--backend", backend.spec, "--steps", 2, "--dtype", "bfloat16", "--out", tmp_path / "x")
        return
    f32, bf16 = tmp_path / "f32", tmp_path / "bf16"
    run("--backend", backend.spec, "--steps", 12, "--eval-every", 0, "--out", f32)
    run("--backend", backend.spec, "--steps", 12, "--eval-every", 0, "--dtype", "bfloat16", "--out", bf16)
    a, b = history(f32)["history"]["losses"], history(bf16)["history"]["losses"]
    # bf16 has 8 mantissa bits: the curves track each other to a few hundredths
    assert abs(a[-1] - b[-1]) < 0.1 and b[-1] < b[0] - 0.3
    from accel.io import safetensors as checkpoint

    assert checkpoint.read_index(str(bf16 / "checkpoint-000012" / "model.safetensors"))[
        "model.embed_tokens.weight"].dtype == "F32"  # master weights stay float32


def test_resume_with_other_data_is_refused(tmp_path):
    out = tmp_path / "run"
    run("--backend", "numpy", "--steps", 2, "--eval-every", 0, "--out", out)
    other = tmp_path / "other.txt"
    other.write_text(__import__("pathlib").Path(CORPUS).read_text(encoding="utf-8")[:5000] + "something else entirely. " * 100)
    with pytest.raises(AccelError, match="sha256") as info:
        from accel.cli.main import build_parser
        from accel.cli.train import train_from_args

        train_from_args(build_parser().parse_args(["train", "--resume", str(out), "--data", str(other),
                                                   "--steps", "3", "--no-progress"]))
    assert "HINT" in str(info.value)


def test_missing_resume_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope"), "--no-progress"]) == 1
    assert "no complete training checkpoint" in capsys.readouterr().err
