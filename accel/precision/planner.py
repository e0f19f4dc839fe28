"""The planner: FP8 where it is safe, measured per linear layer on calibration batches.

For every candidate layer ℓ and recipe r it measures, against the unquantized model:

  * a second-order estimate of the loss increase the layer's FP8 output error would cause,
        est(ℓ, r) = ½ · n · Σ (∂L/∂Y_ℓ)² · (Y_ℓ,r − Y_ℓ)²   (relative to the loss L),
    the diagonal Fisher approximation for a loss that is a mean over n tokens: ∂L/∂Y comes from
    one backward pass through zero probes added to each output, Y_q − Y from running that
    layer's inputs through `ops.fp8_linear`;
  * the loss change with that layer alone in FP8, (L_ℓ,r − L) / L, one forward pass each;
  * planning for training (the default `purpose`): what that layer alone in FP8, forward and
    backward GEMMs, does to the full parameter gradient, per parameter tensor the NMSE against
    the unquantized gradient (`accel.precision.gradients`), one forward+backward pass each. FP8
    in one layer can damage *other* layers' gradients while its loss estimate is tiny: v_proj of
    the small preset's upper blocks puts NMSE 0.1-0.4 on those blocks' q_proj/k_proj gradients.

The layer's score for a recipe is the second-order estimate. The measured loss change is written
into the policy beside it but does not decide: on calibration sets of a few thousand tokens it is
dominated by noise (on the bundled model, ±1e-2 relative for layers whose estimate is 1e-4, and
−5e-4 for a planted layer whose output NMSE is 0.29), while the estimate separates them cleanly.
For training, a recipe whose worst per-tensor gradient NMSE exceeds `grad_nmse_max` is not
used, and a layer no recipe passes stays in bfloat16 with the damaged gradient named. Each layer
gets the first remaining recipe (in the order given: cheapest first; for training only recipes
whose gradient damage is within GRADIENT_SLACK of the layer's least) whose score is within its
share of the budget (budget / number of candidates), else its lowest-scoring one; then the
layers go FP8 in increasing order of score while the scores' sum stays within the budget. The
rest stay in bfloat16 with the reason written down. What all the chosen FP8 layers together do
to the gradients is measured once more and recorded (`policy_gradients`), not enforced.

The deny-list (`DENY`, the first and last blocks, and for training the attention projections) is
applied before measuring; see docs/fp8.md.
"""
from __future__ import annotations

import math

import numpy as np

import accel
from accel import ops

from .gradients import (
    GRADIENT_MEASURE, averaged, gradient_errors, param_grads, policy_gradients, reference_grads,
)
from .linear import Fp8Plan, capture, fp8_autocast
from .policy import LayerChoice, Policy, linear_shapes
from .recipes import HIGH_PRECISION, get_recipe

DEFAULT_RECIPES = ("tensorwise_current", "rowwise", "blockwise")
DEFAULT_BUDGET = 0.005
PURPOSES = ("training", "inference")
DEFAULT_GRAD_NMSE_MAX = 0.03   # chosen from measurements, see docs/fp8.md ("The planner")

# Kept out of FP8 whatever they measure. Embeddings, norms and the attention softmax never go
# through a linear layer, so they are out of FP8 by construction; they are listed so that the
# policy file says so.
DENY = {
    "lm_head": "LM head: its logits feed the softmax of every token directly (kept in high precision "
               "by DeepSeek-V3 and Transformer Engine recipes)",
}
ALWAYS_HIGH = ("embeddings (a gather, no GEMM)", "RMSNorm / LayerNorm", "attention softmax and scores",
               "loss (cross-entropy)")
EDGE_REASON = "first/last transformer block: kept in bfloat16 by default (pass --allow-first-last to measure it)"
# Planning for training keeps the attention projections in bfloat16: on the small preset at lr
# 1e-3 over 600 steps, FP8 in every linear of blocks 1-4 ended 0.37 % and 0.96 % above bfloat16
# where float32 ended 0.045 % and 0.072 % (every other recipe of those layers, and q_proj/k_proj
# out, 0.76-0.81 % on the worse seed); the MLPs alone 0.07-0.11 % on three seeds (docs/fp8.md,
# "FP8 training against bfloat16"). The one-step measures do not see it: it builds up over a run.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ATTENTION_REASON = ("attention projection, planning for training: kept in bfloat16 by default (with them in "
                    "FP8 a small model trained 0.4-1 % above bfloat16, the MLPs alone within 0.11 %; "
                    "pass --allow-attention to measure them)")


def deny_reason(name: str, num_layers: int, allow_first_last: bool, allow_attention: bool) -> str | None:
    for key, reason in DENY.items():
        if name == key or name.endswith("." + key):
            return reason
    if not allow_first_last and name.startswith("model.layers."):
        index = int(name.split(".")[2])
        if index in (0, num_layers - 1):
            return EDGE_REASON
    if not allow_attention and ".self_attn." in name and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS:
        return ATTENTION_REASON
    return None


def calibration_batches(model, data_path: str, batches: int, batch_size: int, seq_len: int, seed: int = 0):
    """(inputs, targets) int64 numpy pairs from a text file, tokenized with the model's tokenizer."""
    from accel.train.data import TokenData

    if model.tokenizer is None:
        raise accel.ModelError("the model directory has no tokenizer.json, so --data text cannot be tokenized",
                               hint="plan a model saved with its tokenizer")
    data = TokenData.from_text_file(data_path, model.tokenizer, val_fraction=0.0)
    if len(data.train) < seq_len + 1:
        raise accel.ModelError(f"{data_path}: {len(data.train)} tokens, fewer than --seq-len + 1 = {seq_len + 1}",
                               hint="use a shorter --seq-len or a longer text file")
    out = []
    for i in range(batches):
        w = data.windows("train", range(i * batch_size, (i + 1) * batch_size), seq_len, seed)
        out.append((w[:, :-1], w[:, 1:]))
    return out


def _loss(model, x, y):
    from accel.models.llama import causal_lm_loss

    return causal_lm_loss(model.config)(model.params, x, y)


def measure(model, batches, candidates: list[str], recipes: tuple[str, ...],
            gradients: bool = False, references: list | None = None) -> tuple[float, dict]:
    """(baseline loss, {layer: {recipe: {"second_order", "loss_delta", "score", "output_nmse"}}}).

    With `gradients`, each layer runs alone in FP8 through a forward *and backward* pass, and
    every recipe's entry also gets "grad_nmse_worst" (the largest per-parameter-tensor NMSE of
    the full parameter gradient against the unquantized one, averaged over the batches per
    tensor first), "grad_worst_tensor" (whose gradient that is) and "grad_nmse_global" (the
    NMSE of all parameter gradients together). The loss change then comes from the same pass.
    `references`: the unquantized gradients (gradients.reference_grads), if already computed."""
    from .metrics import nmse

    backend = model.backend
    second = {n: {r: 0.0 for r in recipes} for n in candidates}
    err = {n: {r: 0.0 for r in recipes} for n in candidates}
    delta = {n: {r: 0.0 for r in recipes} for n in candidates}
    grad_err = {n: {r: [] for r in recipes} for n in candidates}        # per batch: (per tensor, global)
    if gradients and references is None:
        references = reference_grads(model, batches)
    base_total = 0.0
    for index, (xs, ys) in enumerate(batches):
        x, y = accel.from_numpy(xs, backend), accel.from_numpy(ys, backend)
        n_tokens = xs.size
        shapes = linear_shapes(model.config)
        probes = {n: ops.zeros(tuple(xs.shape) + (shapes[n][0],), model.dtype, backend) for n in candidates}
        seen = {}

        def loss_of(probes):
            with capture(probes) as watch:
                value = _loss(model, x, y)
            seen["watch"] = watch
            return value

        base, grads = accel.value_and_grad(loss_of)(probes)
        base = float(base)
        base_total += base
        watch = seen["watch"]
        reference = references[index] if gradients else None
        for n in candidates:
            g = np.asarray(grads[n].numpy(), np.float64)
            y_ref = watch.outputs[n]
            w, b = model.params[n + ".weight"], model.params.get(n + ".bias")
            for r in recipes:
                yq = ops.fp8_linear(watch.inputs[n], w, b, **get_recipe(r).op_attrs())
                d = np.asarray(yq.numpy(), np.float64) - np.asarray(y_ref.numpy(), np.float64)
                second[n][r] += 0.5 * n_tokens * float(np.sum(g * g * d * d)) / base
                err[n][r] += nmse(yq.numpy(), y_ref.numpy())
                with fp8_autocast(Fp8Plan({n: get_recipe(r)})):
                    if reference is None:
                        value = float(_loss(model, x, y))
                    else:
                        value, fp8_grads = param_grads(model, x, y)
                        grad_err[n][r].append(gradient_errors(fp8_grads, reference))
                delta[n][r] += (value - base) / base
    k = len(batches)
    out = {n: {r: {"second_order": second[n][r] / k, "loss_delta": delta[n][r] / k,
                   "output_nmse": err[n][r] / k,
                   "score": second[n][r] / k} for r in recipes}
           for n in candidates}
    if gradients:
        for n in candidates:
            for r in recipes:
                out[n][r].update(averaged(grad_err[n][r]))
    return base_total / k, out


def plan(model, batches, *, recipes: tuple[str, ...] = DEFAULT_RECIPES, budget: float = DEFAULT_BUDGET,
         allow_first_last: bool = False, deny: tuple[str, ...] = (), purpose: str = "training",
         grad_nmse_max: float = DEFAULT_GRAD_NMSE_MAX, allow_attention: bool = False) -> Policy:
    """The FP8 policy of `model` measured on `batches` [(inputs, targets) int arrays].

    `purpose` "training" also measures what each layer's FP8 does to the parameter gradients and
    keeps a layer out of FP8 when a recipe's worst per-tensor gradient NMSE exceeds
    `grad_nmse_max`, and keeps the attention projections in bfloat16 unless `allow_attention`;
    "inference" decides on the loss estimate alone (docs/fp8.md)."""
    for r in recipes:
        get_recipe(r)  # unknown names fail before any measuring
    if not budget > 0:
        raise accel.AccelError(f"the error budget must be > 0, got {budget}",
                               hint="e.g. --budget 0.005 (a 0.5% relative loss increase)")
    if purpose not in PURPOSES:
        raise accel.AccelError(f"unknown planning purpose {purpose!r}", hint=f"use one of {', '.join(PURPOSES)}")
    gradients = purpose == "training"
    allow_attention = allow_attention or not gradients  # the attention deny is for training only
    if gradients and not grad_nmse_max > 0:
        raise accel.AccelError(f"the gradient NMSE limit must be > 0, got {grad_nmse_max}",
                               hint=f"e.g. --grad-nmse-max {DEFAULT_GRAD_NMSE_MAX}")
    shapes = linear_shapes(model.config)
    num_layers = model.config.num_hidden_layers
    choices: dict[str, LayerChoice] = {}
    candidates = []
    for name in shapes:
        reason = deny_reason(name, num_layers, allow_first_last, allow_attention)
        if reason is None and any(d and d in name for d in deny):
            reason = "deny-list given on the command line"
        if reason is not None:
            choices[name] = LayerChoice(HIGH_PRECISION, None, None, f"deny-list: {reason}")
        else:
            candidates.append(name)
    references = reference_grads(model, batches) if gradients and candidates else None
    baseline, measured = (measure(model, batches, candidates, recipes, gradients, references) if candidates
                          else (float("nan"), {}))
    share = budget / max(1, len(candidates))
    detail = {n: {r: {m: _round(v) for m, v in s.items()} for r, s in measured[n].items()} for n in candidates}
    best = {}
    for name in candidates:
        recipe, why = _pick(measured[name], recipes, share, grad_nmse_max if gradients else None)
        if recipe is not None:
            best[name] = recipe
        else:
            choices[name] = LayerChoice(HIGH_PRECISION, None, _round(min(s["score"] for s in measured[name].values())),
                                        why, detail[name])
    used = 0.0
    for name in sorted(best, key=lambda n: measured[n][best[n]]["score"]):
        r = best[name]
        s = measured[name][r]
        score = s["score"]
        grads = (f", worst gradient NMSE {s['grad_nmse_worst']:.3g} on {s['grad_worst_tensor']}"
                 if gradients else "")
        if math.isfinite(score) and used + score <= budget:
            used += score
            choices[name] = LayerChoice(get_recipe(r).forward_dtype.name, r, _round(score),
                                        f"FP8 {r}: score {score:.3g} (second-order {s['second_order']:.3g}, "
                                        f"alone-in-FP8 loss change {s['loss_delta']:+.3g}{grads}); "
                                        f"budget used {used:.3g} of {budget:g}", detail[name])
        else:
            choices[name] = LayerChoice(HIGH_PRECISION, None, _round(score),
                                        f"sensitive: best recipe {r} scores {score:.3g}, which would take the "
                                        f"budget to {used + score:.3g} > {budget:g}", detail[name])
    ordered = {name: choices[name] for name in shapes}
    info = {"purpose": purpose, "budget": budget, "budget_used": _round(used), "recipes": list(recipes),
            "baseline_loss": _round(baseline), "allow_first_last": allow_first_last,
            "calibration": {"batches": len(batches), "tokens": int(sum(b[0].size for b in batches))},
            "measure": "score = 0.5*n*sum((dL/dY)^2*(Yq-Y)^2)/L (second-order estimate of the relative "
                       "loss increase); loss_delta = (L with the layer alone in FP8 - L)/L, reported only",
            "allow_attention": allow_attention,
            "deny_list": {**DENY, "first/last block": EDGE_REASON if not allow_first_last else "allowed",
                          "attention projections": ATTENTION_REASON if not allow_attention else "allowed"},
            "always_high_precision": list(ALWAYS_HIGH)}
    if gradients:
        fp8 = {n: get_recipe(c.recipe) for n, c in ordered.items() if c.is_fp8}
        together = policy_gradients(model, batches, Fp8Plan(fp8), references) if fp8 else None
        info.update(grad_nmse_max=grad_nmse_max, gradient_slack=GRADIENT_SLACK, gradient_measure=GRADIENT_MEASURE,
                    policy_gradients={k: _round(v) for k, v in together.items()} if together else None)
    return Policy(ordered, dict(shapes), model.config.model_type, info)


# Planning for training takes a cheaper recipe only if its worst gradient NMSE is within this
# factor of the best recipe's for that layer. tensorwise_current's e5m2 gradients (2 mantissa
# bits against e4m3fn's 3) give 2-4x the gradient NMSE of rowwise/blockwise on nearly every layer
# of the small preset, and 300-step training with it ended 0.11-0.26 % above bfloat16 against
# 0.09-0.18 % with rowwise in the same layers (docs/fp8.md); 1.5 separates the gradient format,
# not the measurement's noise (rowwise and blockwise lie within 1.2x of each other).
GRADIENT_SLACK = 1.5


def _pick(scores: dict, recipes: tuple[str, ...], share: float, grad_limit: float | None) -> tuple[str | None, str]:
    """(recipe, "") for a layer: among the recipes within the gradient limit (all, without one)
    and, for training, within GRADIENT_SLACK of the least gradient damage of any of them, the
    first whose score is within the layer's share of the budget, else the lowest-scoring.
    (None, reason) where none is within the limit, naming the gradient that even the least
    damaging recipe damages."""
    allowed = [r for r in recipes if grad_limit is None or scores[r]["grad_nmse_worst"] <= grad_limit]
    if not allowed:
        r = min(recipes, key=lambda r: scores[r]["grad_nmse_worst"])
        return None, (f"sensitive (gradients): {r} puts NMSE {scores[r]['grad_nmse_worst']:.3g} on "
                      f"{scores[r]['grad_worst_tensor']}'s gradient > {grad_limit:g}")
    if grad_limit is not None:  # training: a cheaper recipe only if its gradients are nearly as good
        least = min(scores[r]["grad_nmse_worst"] for r in allowed)
        allowed = [r for r in allowed if scores[r]["grad_nmse_worst"] <= GRADIENT_SLACK * least]
    within = [r for r in allowed if scores[r]["score"] <= share]
    return (within[0] if within else min(allowed, key=lambda r: scores[r]["score"])), ""


def _round(v: float) -> float:
    return float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v
