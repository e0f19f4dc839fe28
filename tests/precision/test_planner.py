"""The planner keeps a planted sensitive layer (outlier-heavy activations) in bfloat16 and puts
the rest in FP8; its deny-list and budget behave as documented. Planning for training, its
gradient measure matches a transformers float64 reference, and layers whose FP8 damages a
gradient (planted, and the small preset's upper v_proj) stay in bfloat16."""
from __future__ import annotations

import re

import numpy as np
import pytest

import accel
import accel.models
from accel import precision
from accel.models.llama import causal_lm_loss
from accel.precision import planner
from accel.precision.metrics import nmse
from planting import plant_outlier_channels, plant_similar_positions


def test_planted_sensitive_layer_stays_in_bfloat16(bundled, calibration):
    x, y = (accel.from_numpy(a, bundled.backend) for a in calibration[0])
    before = float(causal_lm_loss(bundled.config)(bundled.params, x, y))
    planted = plant_outlier_channels(bundled, layer=2)
    # the transform is exact in high precision: the model computes the same loss
    assert abs(float(causal_lm_loss(bundled.config)(bundled.params, x, y)) - before) < 1e-4 * before
    policy = precision.plan(bundled, calibration, purpose="inference")
    c = policy.layers[planted]
    assert not c.is_fp8 and c.reason.startswith("sensitive"), (c, policy.summary())
    # every recipe really is bad for it (measured, not assumed): alone it would spend the budget
    assert min(d["score"] for d in c.detail.values()) > policy.planner["budget"]
    others = [n for n, ch in policy.layers.items()
              if n != planted and not ch.reason.startswith("deny-list")]
    assert len(others) == 13 and all(policy.layers[n].is_fp8 for n in others), \
        {n: policy.layers[n].reason for n in others if not policy.layers[n].is_fp8}
    # its up_proj now has outlier weight rows: per-output-channel scaling is the recipe that fits
    assert policy.layers["model.layers.2.mlp.up_proj"].recipe == "rowwise"


def test_planted_layer_whose_backward_damages_gradients_stays_in_bfloat16_for_training(bundled, calibration):
    """The same planted pair, planned for training: up_proj's outlier weight rows are harmless to
    the forward pass in row-wise FP8 (one scale per output channel), but its input-gradient GEMM
    re-quantizes the weight per input column, where the outlier rows flush the other rows'
    weights, so the gradient reaching the layer's input is damaged. The loss estimate cannot see
    that; the gradient measure does, and names the damaged gradient."""
    planted = plant_outlier_channels(bundled, layer=2)
    up = planted.replace("down_proj", "up_proj")
    policy = precision.plan(bundled, calibration, deny=("self_attn", "layers.1."))   # layer 2's MLP only
    c = policy.layers[up]
    assert not c.is_fp8 and c.reason.startswith("sensitive (gradients): "), c.reason
    assert "model.layers.2.post_attention_layernorm.weight's gradient" in c.reason, c.reason
    # by the loss alone row-wise would have been taken (its estimate is within the budget share)
    assert c.detail["rowwise"]["score"] < policy.planner["budget"] / 3 < c.detail["rowwise"]["grad_nmse_worst"]
    assert not policy.layers[planted].is_fp8
    gate = policy.layers[planted.replace("down_proj", "gate_proj")]
    assert gate.is_fp8 and gate.detail[gate.recipe]["grad_nmse_worst"] < 0.01, gate.reason


def test_deny_list_and_first_last_blocks(bundled, calibration):
    policy = precision.plan(bundled, calibration[:1], recipes=("tensorwise_current",))
    assert not policy.layers["lm_head"].is_fp8 and "LM head" in policy.layers["lm_head"].reason
    for name, c in policy.layers.items():
        if name.startswith(("model.layers.0.", "model.layers.3.")):
            assert not c.is_fp8 and "first/last" in c.reason
    assert policy.planner["budget_used"] <= policy.planner["budget"]


def test_training_plans_keep_the_attention_projections_in_bfloat16(bundled, calibration):
    """Planning for training keeps q/k/v/o_proj in bfloat16 by default (what they cost over a
    600-step run, docs/fp8.md), says so per layer and in the planner record; --allow-attention
    measures them, and an inference plan measures them anyway."""
    kwargs = dict(recipes=("tensorwise_current",), allow_first_last=True)
    training = precision.plan(bundled, calibration[:1], **kwargs)
    allowed = precision.plan(bundled, calibration[:1], allow_attention=True, **kwargs)
    inference = precision.plan(bundled, calibration[:1], purpose="inference", **kwargs)
    attention = [n for n in training.layers if ".self_attn." in n]
    assert len(attention) == 4 * bundled.config.num_hidden_layers
    for name in attention:
        c = training.layers[name]
        assert not c.is_fp8 and not c.detail and "attention projection" in c.reason, c.reason
        assert "attention projection" not in allowed.layers[name].reason
        assert "attention projection" not in inference.layers[name].reason
    assert any(allowed.layers[n].is_fp8 for n in attention) and any(inference.layers[n].is_fp8 for n in attention)
    assert all(training.layers[n].is_fp8 for n in training.layers if ".mlp." in n)
    assert training.planner["allow_attention"] is False and allowed.planner["allow_attention"] is True
    assert inference.planner["allow_attention"] is True  # the deny is for training only


def test_a_tiny_budget_keeps_everything_in_bfloat16(bundled, calibration):
    policy = precision.plan(bundled, calibration[:1], recipes=("tensorwise_current",), budget=1e-9)
    assert policy.summary()["fp8_layers"] == 0
    assert all(c.reason.startswith(("sensitive", "deny-list")) for c in policy.layers.values())


def test_second_order_estimate_singles_out_the_planted_layers(bundled, calibration):
    planted = plant_outlier_channels(bundled, layer=1)
    policy = precision.plan(bundled, calibration[:1], recipes=("tensorwise_current",), allow_first_last=True)
    names = [n for n, c in policy.layers.items() if c.detail]
    est = np.array([policy.layers[n].detail["tensorwise_current"]["second_order"] for n in names])
    out = np.array([policy.layers[n].detail["tensorwise_current"]["output_nmse"] for n in names])
    # the planted pair (down_proj with outlier inputs, up_proj with outlier weight rows) are the
    # two worst by the estimate, far above the rest; the output error agrees on down_proj
    pair = {planted, planted.replace("down_proj", "up_proj")}
    top = np.argsort(est)[::-1]
    assert {names[top[0]], names[top[1]]} == pair and est[top[1]] > 10 * est[top[2]]
    assert names[int(np.argmax(out))] == planted and out.max() > 100 * np.median(out)


# --- the gradient measure (planning for training) ---------------------------------------------
def _fp8_tensorwise(torch):
    """torch float64 autograd of a linear with tensorwise_current FP8 GEMMs, written from the
    recipe's description (docs/fp8.md): x and w in float8_e4m3fn, the output gradient in
    float8_e5m2, one scale amax/max(format) per tensor, saturating, products in float64."""
    def q(t, fmt):
        top = float(torch.finfo(fmt).max)
        s = t.abs().max() / top
        return (t / s).clamp(-top, top).to(fmt).to(torch.float64) * s

    class Fp8Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            xq, wq = q(x, torch.float8_e4m3fn), q(w, torch.float8_e4m3fn)
            ctx.save_for_backward(xq, wq)
            return xq @ wq.T

        @staticmethod
        def backward(ctx, g):
            xq, wq = ctx.saved_tensors
            gq = q(g, torch.float8_e5m2)
            return gq @ wq, gq.reshape(-1, gq.shape[-1]).T @ xq.reshape(-1, xq.shape[-1])

    return Fp8Linear


def _hf_gradients(model, batch, fp8_layer=None):
    """{parameter: float64 gradient} of the mean next-token loss through transformers'
    LlamaForCausalLM in float64, with `fp8_layer` (a name) running _fp8_tensorwise."""
    import torch

    from accel.bench.hf_reference import HFModel

    host = {k: np.asarray(v.numpy()) for k, v in model.params.items()}
    hf = HFModel(model.config, host, "float64").model
    if fp8_layer is not None:
        module, fn = hf.get_submodule(fp8_layer), _fp8_tensorwise(torch)
        module.forward = lambda x: fn.apply(x, module.weight)
    xs, ys = (torch.from_numpy(a) for a in batch)
    logits = hf(xs).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1)).backward()
    return {k: p.grad.numpy() for k, p in hf.named_parameters()}


def test_gradient_measure_matches_a_torch_float64_reference(bundled, calibration):
    """The planner's per-layer gradient NMSE (worst tensor, its name, all parameters together)
    equals the same figures computed with transformers in float64 and an FP8 linear written in
    torch (the global figure covers every parameter, other layers' gradients included)."""
    layer = "model.layers.2.self_attn.v_proj"
    _, measured = planner.measure(bundled, calibration[:1], [layer], ("tensorwise_current",), gradients=True)
    got = measured[layer]["tensorwise_current"]
    ref = _hf_gradients(bundled, calibration[0])
    fp8 = _hf_gradients(bundled, calibration[0], layer)
    per = {k: nmse(fp8[k], ref[k]) for k in ref}
    worst = max(per, key=per.get)
    total = sum(float(np.sum((fp8[k] - ref[k]) ** 2)) for k in ref) / sum(float(np.sum(r * r)) for r in ref.values())
    assert got["grad_worst_tensor"] == worst, (got, worst)
    np.testing.assert_allclose(got["grad_nmse_worst"], per[worst], rtol=0.02)
    np.testing.assert_allclose(got["grad_nmse_global"], total, rtol=0.02)


ATTENTION_OF_FIRST_BLOCKS = ("model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                             "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj")
ONLY_THOSE = ("mlp", "q_proj", "k_proj", "layers.2.", "layers.3.")   # --deny substrings


def test_layers_that_damage_gradients_stay_in_bfloat16_for_training(bundled, calibration):
    """With every position's embedding nearly the same, the attention-score gradients become a
    small difference of large terms (the v_proj effect of docs/fp8.md, planted): FP8 in these
    layers then damages q_proj/k_proj gradients although its loss estimate is small. A training
    plan keeps them in bfloat16 naming the damaged gradient; an inference plan, which measures the
    loss alone, puts them in FP8; on the unplanted model the training plan does too."""
    kwargs = dict(recipes=("tensorwise_current", "rowwise"), allow_first_last=True, deny=ONLY_THOSE,
                  allow_attention=True)
    clean = precision.plan(bundled, calibration[:1], **kwargs)
    assert [n for n, c in clean.layers.items() if c.is_fp8] == list(ATTENTION_OF_FIRST_BLOCKS)
    plant_similar_positions(bundled)
    training = precision.plan(bundled, calibration[:1], **kwargs)
    inference = precision.plan(bundled, calibration[:1], purpose="inference", **kwargs)
    assert "grad_nmse_max" not in inference.planner and "policy_gradients" not in inference.planner
    for name in ATTENTION_OF_FIRST_BLOCKS:
        c = training.layers[name]
        assert not c.is_fp8 and re.fullmatch(
            r"sensitive \(gradients\): (tensorwise_current|rowwise) puts NMSE \S+ on "
            r"model\.layers\.\d\.self_attn\.[qk]_proj\.weight's gradient > 0\.03", c.reason), c.reason
        assert all(d["grad_nmse_worst"] > 0.03 for d in c.detail.values()), c.detail
        assert inference.layers[name].is_fp8, inference.layers[name].reason
    assert training.summary()["fp8_layers"] == 0 and training.planner["policy_gradients"] is None


def test_planning_purpose_and_gradient_limit_are_checked(bundled, calibration):
    with pytest.raises(accel.AccelError, match="purpose"):
        precision.plan(bundled, calibration[:1], purpose="serving")
    with pytest.raises(accel.AccelError, match="gradient NMSE limit"):
        precision.plan(bundled, calibration[:1], grad_nmse_max=0.0)


@pytest.mark.slow
def test_small_preset_upper_v_proj_stays_in_bfloat16_for_training(tmp_path):
    """The effect of docs/fp8.md itself: after 50 bfloat16 steps of the small preset (lr 1e-3, no
    clipping), FP8 in the v_proj of blocks 3-5 damages the q_proj/k_proj gradients of its block,
    while o_proj in FP8 does not. A training plan keeps those v_proj in bfloat16; an inference
    plan, which sees only the loss, puts them in FP8."""
    from accel.cli.main import main
    from accel.cli.train import default_data

    run = str(tmp_path / "run")
    assert main(["train", "--model-config", "small", "--steps", "50", "--lr", "1e-3", "--grad-clip", "0",
                 "--dtype", "bfloat16", "--backend", "torch:cpu", "--out", run, "--no-progress"]) == 0
    model = accel.models.load_pretrained(run, backend="torch:cpu")
    batches = precision.calibration_batches(model, default_data(), 2, 4, 64)
    kwargs = dict(allow_first_last=True, deny=("mlp", "q_proj", "k_proj", "layers.0.", "layers.1.", "layers.2."),
                  allow_attention=True)
    training = precision.plan(model, batches, **kwargs)
    inference = precision.plan(model, batches, purpose="inference", **kwargs)
    for i in (3, 4, 5):
        v = training.layers[f"model.layers.{i}.self_attn.v_proj"]
        assert not v.is_fp8 and re.search(rf"on model\.layers\.{i}\.self_attn\.[qk]_proj\.weight's gradient", v.reason), \
            v.reason
        assert inference.layers[f"model.layers.{i}.self_attn.v_proj"].is_fp8
        o = training.layers[f"model.layers.{i}.self_attn.o_proj"]
        assert o.is_fp8 and o.detail[o.recipe]["grad_nmse_worst"] < 0.01, o.reason


def test_fp8_plan_cli_shows_the_gradient_measure(tmp_path, capsys):
    from accel.cli.main import main

    common = ["fp8-plan", "--model", accel.models.bundled_path(), "--batches", "1", "--batch-size", "2",
              "--seq-len", "16", "--recipes", "tensorwise_current", "--deny", "mlp", "--allow-attention"]
    out = tmp_path / "policy.json"
    assert main([*common, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gradient NMSE limit 0.03: 0 kept out by it" in text and "all FP8 layers together" in text, text
    policy = precision.load_policy(out)
    assert policy.planner["purpose"] == "training" and policy.planner["grad_nmse_max"] == 0.03
    v = policy.layers["model.layers.1.self_attn.v_proj"]
    line = next(ln for ln in text.splitlines() if "model.layers.1.self_attn.v_proj" in ln)
    shown = v.detail["tensorwise_current"]
    assert f"{shown['grad_nmse_worst']:.3g}" in line and shown["grad_worst_tensor"].removeprefix("model.") in line
    assert main([*common, "--for", "inference", "--out", str(out)]) == 0
    assert "for inference (gradients not measured)" in capsys.readouterr().out
    assert "grad_nmse_max" not in precision.load_policy(out).planner
    assert main([*common, "--grad-nmse-max", "0", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gradient NMSE limit must be > 0" in err and "Traceback" not in err
