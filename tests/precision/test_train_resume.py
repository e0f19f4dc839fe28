"""`accel train --fp8` with delayed scaling resumes exactly: the amax histories are saved in each
checkpoint (state.safetensors) and the policy in the run state, so a run stopped at step 4 and
resumed ends with the same per-step losses as one that never stopped (compared bit for bit).
Before the histories were checkpointed, the resumed step fell back to current scaling and the
losses after the resume differed."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

import accel
import accel.models
from accel import precision
from accel.cli.main import main
from accel.cli.train import _model_config, default_data
from accel.io import safetensors as st

BASE = ["--model-config", "micro", "--data", default_data(), "--batch-size", "2", "--seq-len", "16",
        "--lr", "3e-3", "--warmup", "2", "--eval-every", "0", "--save-every", "4", "--no-progress"]


def _delayed_policy(path) -> str:
    tokenizer = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy").tokenizer
    shapes = precision.linear_shapes(_model_config("micro", tokenizer))
    layers = {n: ({"format": "float8_e4m3fn", "recipe": "tensorwise_delayed", "score": 0.0, "reason": "test"}
                  if n != "lm_head" else {"format": "bfloat16", "recipe": None, "reason": "deny-list"})
              for n in shapes}
    path.write_text(json.dumps({"format": "accel-fp8-policy", "version": 1, "layers": layers,
                                "model": {"model_type": "llama", "layers": {n: list(s) for n, s in shapes.items()}}}))
    return str(path)


def _losses(out):
    with open(os.path.join(out, "training.json")) as f:
        return json.load(f)["history"]["losses"]


def test_resume_continues_the_delayed_scaling_exactly(backend, tmp_path):
    policy = _delayed_policy(tmp_path / "policy.json")
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = [*BASE, "--backend", backend.spec, "--fp8", policy]
    assert main(["train", *args, "--steps", "8", "--out", str(straight)]) == 0
    assert main(["train", *args, "--steps", "4", "--schedule-steps", "8", "--out", str(split)]) == 0
    ckpt = split / "checkpoint-000004"
    saved = st.load_safetensors(str(ckpt / "state.safetensors"), "numpy")
    # 2 layers x 7 linears x (x, w, g) histories of 16 steps; 4 steps recorded so far
    assert len(saved) == 2 * 7 * 3 and all(t.shape == (16,) for t in saved.values())
    filled = json.loads(st.read_metadata(str(ckpt / "state.safetensors"))["fp8_amax_filled"])
    assert set(filled.values()) == {4}
    some = saved["fp8_amax_history.model.layers.0.mlp.up_proj.w"].numpy()
    assert np.all(some[:4] > 0) and np.all(some[4:] == 0)
    with open(ckpt / "trainer_state.json") as f:
        recorded = json.load(f)["fp8"]
    assert recorded["policy"] == os.path.abspath(policy) and len(recorded["recipes"]) == 14
    broken = tmp_path / "no-histories"  # a checkpoint without its histories is refused, not run differently
    shutil.copytree(ckpt, broken)
    os.remove(broken / "state.safetensors")
    assert main(["train", "--resume", str(broken), "--steps", "8", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 1
    # resume without --fp8: the run state's policy and the checkpoint's histories apply
    assert main(["train", "--resume", str(split), "--steps", "8", "--no-progress"]) == 0
    a, b = _losses(straight), _losses(split)
    assert len(a) == len(b) == 8
    assert b == a  # bit for bit (float32 losses as JSON floats)
