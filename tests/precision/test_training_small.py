"""FP8 where it is safe, end to end on the small preset (6 blocks, hidden 256): `accel train` a
few dozen bfloat16 steps, `accel fp8-plan --for training` on that checkpoint, then train from
scratch with the policy and with bfloat16 for 300 steps of accel's own loop: the smoothed-loss
gap must stay below 0.25 % (the bar DeepSeek-V3 reports for FP8 against BF16).

The comparison can only judge the bar where it resolves it: float32 against bfloat16 on the same
runs must be well inside it. At lr 3e-4 it is (0.02 % measured). At lr 1e-3 float32 and bfloat16
alone part by 0.5–2.2 %, and the policy lands above that on every seed (0.8–2.5 %): the bar is
not met there; this test cannot assert that setting, docs/fp8.md ("FP8 training against
bfloat16") reports it. Slow: about 10 minutes on two CPU cores.
"""
from __future__ import annotations

import pytest

import accel
import accel.models
from accel import precision
from accel.cli.main import main
from accel.cli.train import default_data
from accel.models.presets import preset
from accel.precision import compare
from accel.train.data import TokenData
from accel.train.loop import TrainConfig

STEPS = 300
LR = 3e-4
MAX_GAP = 0.0025
BACKEND = "torch:cpu"


@pytest.mark.slow
def test_small_preset_trains_with_the_planned_policy_within_the_bar(tmp_path, capsys):
    run, policy_path = tmp_path / "small50", tmp_path / "policy.json"
    assert main(["train", "--model-config", "small", "--steps", "50", "--lr", "1e-3", "--dtype", "bfloat16",
                 "--backend", BACKEND, "--no-progress", "--out", str(run)]) == 0
    assert main(["fp8-plan", "--model", str(run), "--for", "training", "--backend", BACKEND,
                 "--out", str(policy_path)]) == 0
    policy = precision.load_policy(policy_path)
    fp8_layers = {n for n, c in policy.layers.items() if c.is_fp8}
    assert len(fp8_layers) >= 20  # FP8 where it is safe is most of the model, not a token layer

    tokenizer = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy").tokenizer
    config = preset("small", tokenizer.vocab_size)
    data = TokenData.from_text_file(default_data(), tokenizer)
    baseline = compare.train_run(config, data, STEPS, plan=None, lr=LR, backend=BACKEND)
    control = compare.train_run(config, data, STEPS, plan=None, lr=LR, backend=BACKEND, dtype="float32")
    precision.reset_layer_stats()
    fp8 = compare.train_run(config, data, STEPS, plan=precision.training_plan(str(policy_path), config),
                            lr=LR, backend=BACKEND)
    ran = precision.layer_stats()

    control_gap, gap = compare.relative_gap(control, baseline), compare.relative_gap(fp8, baseline)
    with capsys.disabled():
        print(f"\n[fp8 training] small preset, {STEPS} steps, lr {LR}, {len(fp8_layers)} FP8 layers: smoothed "
              f"loss bf16 {baseline.smoothed()[-1]:.4f}, float32 {control.smoothed()[-1]:.4f} "
              f"(gap {control_gap:.3%}), FP8 policy {fp8.smoothed()[-1]:.4f} (gap {gap:.3%})")
    calls = STEPS + TrainConfig.eval_batches  # every training step, and the loop's closing evaluation
    assert set(ran) == fp8_layers and all(sum(v.values()) == calls for v in ran.values())
    assert baseline.smoothed()[-1] < 0.6 * baseline.smoothed()[0]     # it did learn
    assert control_gap < MAX_GAP / 5                                   # the comparison resolves the bar
    assert gap < MAX_GAP
