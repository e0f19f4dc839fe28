"""The FP8 policy file: per linear layer a format, a recipe, the planner's score and the reason,
plus the model's identity (layer names and shapes), so a policy never lands on another model.

    {"format": "accel-fp8-policy", "version": 1,
     "model": {"model_type": "llama", "layers": {"model.layers.0.mlp.up_proj": [352, 128], ...}},
     "planner": {"budget": 0.005, "measure": "...", "baseline_loss": 2.31, ...},
     "layers": {"model.layers.0.mlp.up_proj": {"format": "float8_e4m3fn", "recipe": "rowwise",
                                               "score": 1.2e-05, "reason": "..."}, ...}}

`load_policy` checks the file; `check_model` checks it against a model; `plan_for` turns it
into the `Fp8Plan` that `fp8_autocast` and training run.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from accel.core import dtypes as dt

from .linear import Fp8Plan
from .recipes import HIGH_PRECISION, PrecisionError, Recipe, get_recipe

FORMAT = "accel-fp8-policy"
VERSION = 1


@dataclass(frozen=True)
class LayerChoice:
    format: str                      # "float8_e4m3fn" or "bfloat16" (out of FP8)
    recipe: str | None               # a name in accel.precision.RECIPES, None for bfloat16
    score: float | None = None       # the planner's measured relative loss increase
    reason: str = ""
    detail: dict = field(default_factory=dict)   # the planner's per-recipe measurements

    @property
    def is_fp8(self) -> bool:
        return self.format != HIGH_PRECISION


@dataclass(frozen=True)
class Policy:
    layers: dict[str, LayerChoice]
    model_layers: dict[str, tuple[int, int]]          # every linear of the model: (out, in)
    model_type: str = "llama"
    planner: dict = field(default_factory=dict)
    source: str = "<memory>"

    def fp8_layers(self) -> dict[str, Recipe]:
        return {name: get_recipe(c.recipe) for name, c in self.layers.items() if c.is_fp8}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "model": {"model_type": self.model_type,
                          "layers": {k: list(v) for k, v in self.model_layers.items()}},
                "planner": self.planner,
                "layers": {k: {"format": c.format, "recipe": c.recipe, "score": c.score, "reason": c.reason,
                               **({"detail": c.detail} if c.detail else {})}
                           for k, c in self.layers.items()},
                "summary": self.summary()}

    def summary(self) -> dict:
        recipes: dict[str, int] = {}
        for c in self.layers.values():
            key = c.recipe if c.is_fp8 else HIGH_PRECISION
            recipes[key] = recipes.get(key, 0) + 1
        return {"linear_layers": len(self.layers), "fp8_layers": sum(c.is_fp8 for c in self.layers.values()),
                "by_recipe": recipes}

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)


def _bad(source: str, what: str, hint: str) -> PrecisionError:
    return PrecisionError(f"FP8 policy {source}: {what}", hint=hint)


def policy_from_dict(raw, source: str = "<memory>") -> Policy:
    regenerate = "write it again with `accel fp8-plan --model DIR --out POLICY`"
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise _bad(source, f"not an accel FP8 policy (format must be {FORMAT!r})", regenerate)
    if raw.get("version") != VERSION:
        raise _bad(source, f"version {raw.get('version')!r} is not {VERSION}", regenerate)
    model, layers = raw.get("model"), raw.get("layers")
    if not isinstance(model, dict) or not isinstance(model.get("layers"), dict) or not isinstance(layers, dict):
        raise _bad(source, "needs a 'model' object with 'layers' and a 'layers' object", regenerate)
    shapes = {}
    for name, shape in model["layers"].items():
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d > 0 for d in shape)):
            raise _bad(source, f"model layer {name!r} has shape {shape!r}, not [out, in]", regenerate)
        shapes[name] = (shape[0], shape[1])
    choices = {}
    for name, entry in layers.items():
        if name not in shapes:
            raise _bad(source, f"layer {name!r} is not among the model layers the policy records", regenerate)
        if not isinstance(entry, dict) or not isinstance(entry.get("format"), str):
            raise _bad(source, f"layer {name!r}: entry must be an object with a 'format'", regenerate)
        fmt, recipe = entry["format"], entry.get("recipe")
        if fmt == HIGH_PRECISION:
            recipe = None
        else:
            if fmt not in (d.name for d in dt.FLOAT8_DTYPES):
                raise _bad(source, f"layer {name!r}: unknown format {fmt!r}",
                           f"use float8_e4m3fn or {HIGH_PRECISION}")
            if not isinstance(recipe, str):
                raise _bad(source, f"layer {name!r}: an FP8 layer needs a 'recipe'", "name one of the recipes")
            try:
                r = get_recipe(recipe)
            except PrecisionError as exc:
                raise _bad(source, f"layer {name!r}: {str(exc).splitlines()[0]}", exc.hint) from None
            if r.forward_dtype.name != fmt:
                raise _bad(source, f"layer {name!r}: recipe {recipe} runs {r.forward_dtype.name}, not {fmt}",
                           f"set format to {r.forward_dtype.name}")
        score = entry.get("score")
        detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else {}
        choices[name] = LayerChoice(fmt, recipe, None if score is None else float(score),
                                    str(entry.get("reason", "")), detail)
    return Policy(choices, shapes, str(model.get("model_type", "llama")), dict(raw.get("planner") or {}), source)


def load_policy(policy) -> Policy:
    """A Policy from a Policy, a dict, or a path to a policy JSON file."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, dict):
        return policy_from_dict(policy)
    path = os.fspath(policy)
    if not os.path.isfile(path):
        raise PrecisionError(f"FP8 policy file not found: {path}",
                             hint="write one with `accel fp8-plan --model DIR --out POLICY`")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrecisionError(f"FP8 policy {path} is not valid JSON: {exc}",
                             hint="write it again with `accel fp8-plan --model DIR --out POLICY`") from None
    return policy_from_dict(raw, path)


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """Every linear layer of a model config (name without '.weight' -> (out, in))."""
    return {name[: -len(".weight")]: tuple(shape) for name, shape in config.param_shapes().items()
            if name.endswith(".weight") and len(shape) == 2 and "embed_tokens" not in name}


def check_model(policy: Policy, shapes: dict[str, tuple[int, int]], model_name: str = "this model") -> None:
    """The policy was written for this model: the same linear layers with the same shapes."""
    hint = "this policy was written for another model: run `accel fp8-plan --model DIR` for this one"
    for name, shape in policy.model_layers.items():
        if name not in shapes:
            raise PrecisionError(f"FP8 policy {policy.source}: layer {name!r} does not exist in {model_name}", hint=hint)
        if tuple(shapes[name]) != tuple(shape):
            raise PrecisionError(f"FP8 policy {policy.source}: layer {name!r} is {list(shape)} in the policy "
                                 f"but {list(shapes[name])} in {model_name}", hint=hint)
    missing = sorted(set(shapes) - set(policy.model_layers))
    if missing:
        raise PrecisionError(f"FP8 policy {policy.source}: {model_name} has {len(missing)} linear layer(s) the "
                             f"policy does not know, first {missing[0]!r}", hint=hint)


def plan_for(policy, config) -> Fp8Plan:
    """The Fp8Plan (recipes per layer, fresh delayed-scaling state) of a policy for `config`."""
    policy = load_policy(policy)
    check_model(policy, linear_shapes(config), f"the {config.model_type} model")
    return Fp8Plan(policy.fp8_layers())


def training_record(policy_path: str, plan: Fp8Plan) -> dict:
    """What a training run's state records of its FP8 policy: the file, its sha256 and each FP8
    layer's recipe, so that a resume can apply the same one (and refuse a different one)."""
    import hashlib

    with open(policy_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"policy": os.path.abspath(policy_path), "sha256": digest,
            "recipes": {name: r.name for name, r in sorted(plan.recipes.items())}}


def inference_policy_warning(policy) -> str | None:
    """The line training prints for a policy planned `--for inference`: the planner then judged
    each layer by the loss alone, not by what its FP8 does to the gradients (docs/fp8.md, "The
    planner"). None for a training policy, and for one written before the planner recorded a
    purpose (nothing to say about it)."""
    policy = load_policy(policy)
    if policy.planner.get("purpose") != "inference":
        return None
    return (f"FP8 policy {policy.source} was planned for inference: its layers were not checked for "
            "what FP8 does to the gradients; re-plan with `accel fp8-plan --for training`")


def resume_plan(policy_path: str | None, config, backend, recorded: dict | None = None,
                saved: tuple[dict, dict[str, str]] | None = None,
                warn: Callable[[str], None] | None = None) -> tuple[Fp8Plan | None, dict | None]:
    """(plan, record) for `accel train --fp8`: a new run's plan, or a resumed run's with the
    amax histories its checkpoint saved (`saved`), so the delayed scaling goes on unchanged.

    A resume without --fp8 applies the policy the run state recorded; one whose policy runs other
    recipes than the recorded one, or whose checkpoint lacks the histories, is refused. A policy
    planned for inference is run, with `inference_policy_warning` handed to `warn`."""
    if policy_path is None and recorded:
        policy_path = recorded["policy"]
        if not os.path.exists(policy_path):
            raise PrecisionError(f"this run was trained with the FP8 policy {policy_path}, which no longer exists",
                                 hint="pass --fp8 with a copy of that policy file")
    if policy_path is None:
        return None, None
    policy = load_policy(policy_path)
    plan = plan_for(policy, config)
    if warn is not None and (line := inference_policy_warning(policy)):
        warn(line)
    record = training_record(policy_path, plan)
    if recorded and recorded.get("recipes") != record["recipes"]:
        changed = sorted(n for n in set(recorded.get("recipes", {})) | set(record["recipes"])
                         if recorded.get("recipes", {}).get(n) != record["recipes"].get(n))
        raise PrecisionError(f"FP8 policy {policy_path} runs other recipes than the one this run was trained "
                             f"with ({recorded['policy']}): first differing layer {changed[0]!r}",
                             hint=f"resume with --fp8 {recorded['policy']}, or start a new run")
    delayed = plan.delayed_recipes()
    if saved is not None:
        plan.state.restore(saved[0], saved[1], delayed, backend)
    elif recorded and delayed:
        raise PrecisionError("the checkpoint has no FP8 amax histories (state.safetensors), but the run's "
                             f"policy scales {len(delayed)} layers from them (first: {next(iter(delayed))!r})",
                             hint="resume from a checkpoint written by accel train --fp8 with this policy")
    return plan, record
