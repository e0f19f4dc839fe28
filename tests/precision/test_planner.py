"""The planner keeps a planted sensitive layer (outlier-heavy activations) in bfloat16 and puts
the rest in FP8; its deny-list and budget behave as documented."""
from __future__ import annotations

import numpy as np

import accel
from accel import precision
from accel.models.llama import causal_lm_loss
from planting import plant_outlier_channels


def test_planted_sensitive_layer_stays_in_bfloat16(bundled, calibration):
    x, y = (accel.from_numpy(a, bundled.backend) for a in calibration[0])
    before = float(causal_lm_loss(bundled.config)(bundled.params, x, y))
    planted = plant_outlier_channels(bundled, layer=2)
    # the transform is exact in high precision: the model computes the same loss
    assert abs(float(causal_lm_loss(bundled.config)(bundled.params, x, y)) - before) < 1e-4 * before
    policy = precision.plan(bundled, calibration)
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


def test_deny_list_and_first_last_blocks(bundled, calibration):
    policy = precision.plan(bundled, calibration[:1], recipes=("tensorwise_current",))
    assert not policy.layers["lm_head"].is_fp8 and "LM head" in policy.layers["lm_head"].reason
    for name, c in policy.layers.items():
        if name.startswith(("model.layers.0.", "model.layers.3.")):
            assert not c.is_fp8 and "first/last" in c.reason
    assert policy.planner["budget_used"] <= policy.planner["budget"]


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
