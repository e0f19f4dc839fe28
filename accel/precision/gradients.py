"""What FP8 in some layers does to the parameter gradients: the planner's measure for training.

A layer's FP8 error reaches the gradients twice: through its own backward GEMMs (the input and
weight gradients are computed from FP8 copies), and through its forward output, which every later
layer's backward pass sees. The loss-based estimate sees neither; on the small preset the second
one is what makes `v_proj` unfit for FP8 training (docs/fp8.md). The measure is plain: the full
parameter gradient of the calibration loss with the layers in FP8 against the unquantized one,
NMSE per parameter tensor (AdamW scales each tensor's step by its own gradient's size, so a small
gradient damaged by 10% moves its weights as wrongly as a large one would).
"""
from __future__ import annotations

import numpy as np

import accel

from .linear import Fp8Plan, fp8_autocast
from .metrics import nmse

GRADIENT_MEASURE = ("grad_nmse_worst = max over parameter tensors of NMSE(dL/dθ with the layer alone in FP8 "
                    "(forward and backward GEMMs), dL/dθ unquantized), per tensor averaged over the calibration "
                    "batches; grad_worst_tensor names it; grad_nmse_global = NMSE of all parameter gradients "
                    "together. A recipe whose grad_nmse_worst exceeds grad_nmse_max is not used")


def param_grads(model, x, y) -> tuple[float, dict[str, np.ndarray]]:
    """(loss, {parameter: float64 gradient}) of the calibration loss w.r.t. every parameter."""
    from accel.models.llama import causal_lm_loss

    value, grads = accel.value_and_grad(lambda params: causal_lm_loss(model.config)(params, x, y))(model.params)
    return float(value), {k: np.asarray(g.numpy(), np.float64) for k, g in grads.items() if g is not None}


def gradient_errors(grads: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[dict[str, float], float]:
    """({parameter: NMSE of its gradient}, NMSE over all parameters together) against `reference`."""
    per = {k: nmse(grads[k], ref) for k, ref in reference.items()}
    num = sum(float(np.sum((grads[k] - ref) ** 2)) for k, ref in reference.items())
    den = sum(float(np.sum(ref * ref)) for ref in reference.values())
    return per, (num / den if den > 0 else 0.0)


def averaged(per_batch: list[tuple[dict[str, float], float]]) -> dict:
    """The worst tensor of the per-tensor NMSEs averaged over the batches, and the mean global NMSE."""
    k = len(per_batch)
    per = {name: sum(b[0][name] for b in per_batch) / k for name in per_batch[0][0]}
    worst = max(per, key=per.get)
    return {"grad_nmse_worst": per[worst], "grad_worst_tensor": worst,
            "grad_nmse_global": sum(b[1] for b in per_batch) / k}


def reference_grads(model, batches) -> list[dict[str, np.ndarray]]:
    """The unquantized parameter gradient of each calibration batch: what every FP8 variant is
    judged against (computed once per batch, shared by the per-layer and the whole-policy measure)."""
    return [param_grads(model, accel.from_numpy(xs, model.backend), accel.from_numpy(ys, model.backend))[1]
            for xs, ys in batches]


def policy_gradients(model, batches, fp8: Fp8Plan, references: list | None = None) -> dict:
    """The same figures with every layer of `fp8` in FP8 at once. The planner decides per layer
    and reports this beside it: the layers' damage to one gradient adds up (docs/fp8.md).
    `references`: reference_grads(model, batches), if already computed."""
    references = references if references is not None else reference_grads(model, batches)
    per_batch = []
    for (xs, ys), reference in zip(batches, references):
        x, y = accel.from_numpy(xs, model.backend), accel.from_numpy(ys, model.backend)
        with fp8_autocast(fp8):
            per_batch.append(gradient_errors(param_grads(model, x, y)[1], reference))
    return averaged(per_batch)
