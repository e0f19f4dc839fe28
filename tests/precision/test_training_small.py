"""FP8 where it is safe, end to end on the small preset (6 blocks, hidden 256): `accel train` a
few dozen bfloat16 steps, `accel fp8-plan --for training` on that checkpoint, then train from
scratch with the policy and with bfloat16 in accel's own loop on the sampled corpus
(compare.sampled_data: stories from the bundled model, each window read about once): the
smoothed-loss gap must stay below 0.25 % (the bar DeepSeek-V3 reports for FP8 against BF16).

The comparison can only judge the bar where it resolves it: float32 against bfloat16 on the same
runs must sit well inside it (half the bar). Two settings: lr 3e-4 for 300 steps, and lr 1e-3
for 600 steps on seed 1, the seed where the earlier policy (attention projections in FP8 too)
ended 0.96 % above bfloat16 (docs/fp8.md, "FP8 training against bfloat16"). Slow: about
16 minutes on two CPU cores.
"""
from __future__ import annotations

import pytest

import accel
import accel.models
from accel import precision
from accel.cli.main import main
from accel.models.presets import preset
from accel.precision import compare
from accel.train.loop import TrainConfig

MAX_GAP = 0.0025
BACKEND = "torch:cpu"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(config, sampled corpus, policy path): the policy `accel fp8-plan --for training` writes
    after 50 bfloat16 steps of the small preset."""
    tmp = tmp_path_factory.mktemp("small")
    run, policy_path = tmp / "small50", tmp / "policy.json"
    assert main(["train", "--model-config", "small", "--steps", "50", "--lr", "1e-3", "--dtype", "bfloat16",
                 "--backend", BACKEND, "--no-progress", "--out", str(run)]) == 0
    assert main(["fp8-plan", "--model", str(run), "--for", "training", "--backend", BACKEND,
                 "--out", str(policy_path)]) == 0
    tokenizer = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy").tokenizer
    return preset("small", tokenizer.vocab_size), compare.sampled_data(backend=BACKEND), policy_path


@pytest.mark.slow
@pytest.mark.parametrize("lr, steps, seed", [(3e-4, 300, 0), (1e-3, 600, 1)])
def test_small_preset_trains_with_the_planned_policy_within_the_bar(planned, lr, steps, seed, capsys):
    config, data, policy_path = planned
    policy = precision.load_policy(policy_path)
    fp8_layers = {n for n, c in policy.layers.items() if c.is_fp8}
    # every MLP linear of the middle blocks (43 % of the linear FLOPs); attention, the first and
    # last blocks and the LM head stay in bfloat16 by the deny-list
    mlp = {n for n in policy.layers if ".mlp." in n and not n.startswith(("model.layers.0.", "model.layers.5."))}
    assert fp8_layers == mlp and len(mlp) == 12

    run = dict(lr=lr, seed=seed, backend=BACKEND)
    baseline = compare.train_run(config, data, steps, plan=None, **run)
    control = compare.train_run(config, data, steps, plan=None, dtype="float32", **run)
    precision.reset_layer_stats()
    fp8 = compare.train_run(config, data, steps, plan=precision.training_plan(str(policy_path), config), **run)
    ran = precision.layer_stats()

    control_gap, gap = compare.relative_gap(control, baseline), compare.relative_gap(fp8, baseline)
    with capsys.disabled():
        print(f"\n[fp8 training] small preset, {steps} steps, lr {lr}, seed {seed}, {len(fp8_layers)} FP8 layers: "
              f"smoothed loss bf16 {baseline.smoothed()[-1]:.4f}, float32 {control.smoothed()[-1]:.4f} "
              f"(gap {control_gap:.3%}), FP8 policy {fp8.smoothed()[-1]:.4f} (gap {gap:.3%})")
    calls = steps + TrainConfig.eval_batches  # every training step, and the loop's closing evaluation
    assert set(ran) == fp8_layers and all(sum(v.values()) == calls for v in ran.values())
    assert baseline.smoothed()[-1] < 0.6 * baseline.smoothed()[0]     # it did learn
    assert control_gap < MAX_GAP / 2                                   # the comparison resolves the bar
    assert gap < MAX_GAP
