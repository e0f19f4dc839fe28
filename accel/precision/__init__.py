"""FP8 where it is safe: scaling recipes, the FP8 linear for training and inference, the
per-layer planner and its policy file (docs/fp8.md).

    policy = accel.precision.plan(model, batches)            # or `accel fp8-plan --model DIR`
    model = accel.models.load_pretrained(DIR, fp8=POLICY)     # FP8 weights + scales (inference)
    fp8 = accel.precision.training_plan(POLICY, config)       # FP8 training: wrap the loss
    loss_fn = fp8.wrap(loss_fn)
"""
from __future__ import annotations

from .linear import (
    Fp8Plan, check_backend, fp8_autocast, layer_stats, linear, reset_layer_stats, skipped_layers,
)
from .metrics import nmse, sqnr_db
from .planner import DEFAULT_BUDGET, DEFAULT_RECIPES, DENY, calibration_batches, plan
from .policy import (
    LayerChoice, Policy, check_model, linear_shapes, load_policy, plan_for, resume_plan, training_record,
)
from .ranks import data_parallel_hook, rescale_gradient_amax
from .recipes import HIGH_PRECISION, RECIPES, PrecisionError, Recipe, get_recipe
from .scaling import AmaxHistory, DelayedScalingState
from .storage import apply_policy, is_fp8_checkpoint, load_fp8_model, save_fp8_model, weight_memory

training_plan = plan_for  # the FP8 training hook: Fp8Plan(policy's recipes, fresh amax histories)

__all__ = [
    "AmaxHistory", "DEFAULT_BUDGET", "DEFAULT_RECIPES", "DENY", "DelayedScalingState", "Fp8Plan",
    "HIGH_PRECISION", "LayerChoice", "Policy", "PrecisionError", "RECIPES", "Recipe", "apply_policy",
    "calibration_batches", "check_backend", "check_model", "fp8_autocast", "get_recipe", "is_fp8_checkpoint",
    "layer_stats", "linear", "linear_shapes", "load_fp8_model", "load_policy", "nmse", "plan", "plan_for",
    "data_parallel_hook", "rescale_gradient_amax", "reset_layer_stats", "resume_plan", "save_fp8_model", "skipped_layers", "sqnr_db", "training_plan",
    "training_record", "weight_memory",
]
