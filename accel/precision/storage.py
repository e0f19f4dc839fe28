"""FP8 inference storage: the policy's layers keep their weights in float8 with their scales.

`apply_policy(model, policy)` replaces `<layer>.weight` by its float8_e4m3fn quantization and
adds `<layer>.weight_scale` (float32, one per tensor / output channel / 128×128 block as the
recipe says); `accel.precision.linear` then runs those layers through `ops.fp8_linear`. Such a
model saves as an ordinary safetensors file (F8_E4M3 weights beside F32 scales, the layout of
FP8 checkpoints on the Hugging Face hub) and loads back with `load_fp8_model`.
"""
from __future__ import annotations

import json
import os
import shutil

from accel.core import dtypes as dt
from accel.core.registry import get_backend
from accel.io import safetensors as checkpoint
from accel.ops.fp8 import gemm_blocks, quantize_blocks

from .policy import Policy, check_model, linear_shapes, load_policy
from .recipes import PrecisionError

POLICY_FILE = "fp8_policy.json"
SCALE_SUFFIX = ".weight_scale"


def apply_policy(model, policy):
    """Store the weights of the policy's FP8 layers in float8 with their scales (inference).

    Checks first that the policy belongs to this model (names and shapes). Returns the model."""
    from .linear import check_backend

    policy = load_policy(policy)
    check_model(policy, linear_shapes(model.config), f"the {model.config.model_type} model")
    for name, recipe in policy.fp8_layers().items():
        key = name + ".weight"
        weight = model.params[key]
        if weight.dtype in dt.FLOAT8_DTYPES:
            continue  # already stored in FP8 (a saved FP8 model)
        if not check_backend(weight.backend, name, recipe.forward_dtype):
            continue  # no float8 storage there: the layer stays as it is (warned and counted)
        block = gemm_blocks(recipe.granularity, recipe.block)["w"]
        q, scale = quantize_blocks(weight, recipe.forward_dtype, block, None, recipe.margin)
        model.params[key], model.params[name + SCALE_SUFFIX] = q, scale
    model.fp8_policy = policy
    return model


def weight_memory(model, policy=None) -> dict:
    """Bytes of the FP8 layers' weights as stored (float8 + scales) against bfloat16 storage."""
    policy = load_policy(policy) if policy is not None else getattr(model, "fp8_policy", None)
    if policy is None:
        raise PrecisionError("weight_memory needs an FP8 policy (the model has none applied)",
                             hint="call accel.precision.apply_policy(model, POLICY) first")
    stored = bf16 = 0
    for name in policy.fp8_layers():
        w = model.params[name + ".weight"]
        scale = model.params.get(name + SCALE_SUFFIX)
        stored += w.nbytes + (scale.nbytes if scale is not None else 0)
        bf16 += w.size * dt.bfloat16.itemsize
    return {"fp8_layers": len(policy.fp8_layers()), "stored_bytes": stored, "bfloat16_bytes": bf16,
            "ratio_to_bfloat16": stored / bf16 if bf16 else None}


def save_fp8_model(model, out_dir: str, source_dir: str | None = None) -> str:
    """config.json, model.safetensors (float8 weights + scales), fp8_policy.json, and the
    tokenizer files of `source_dir` when given."""
    policy: Policy | None = getattr(model, "fp8_policy", None)
    if policy is None:
        raise PrecisionError("save_fp8_model: the model has no FP8 policy applied",
                             hint="call accel.precision.apply_policy(model, POLICY) first")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.config.to_dict(), f, indent=2)
    policy.save(os.path.join(out_dir, POLICY_FILE))
    checkpoint.save_safetensors(os.path.join(out_dir, "model.safetensors"), model.params,
                                metadata={"format": "pt", "accel_fp8_policy": POLICY_FILE})
    if source_dir is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if os.path.isfile(os.path.join(source_dir, name)):
                shutil.copyfile(os.path.join(source_dir, name), os.path.join(out_dir, name))
    return out_dir


def is_fp8_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, POLICY_FILE))


def load_fp8_model(path: str, backend=None):
    """A model saved by `save_fp8_model`, its FP8 weights kept in float8 (no dequantization)."""
    from accel.io.tokenizer import Tokenizer
    from accel.models import LlamaConfig, LlamaModel

    config = LlamaConfig.from_file(path)
    policy = load_policy(os.path.join(path, POLICY_FILE))
    check_model(policy, linear_shapes(config), f"the model in {path}")
    index = checkpoint.read_index(path)
    expected = set(config.param_shapes()) | {n + SCALE_SUFFIX for n in policy.fp8_layers()}
    missing = sorted(expected - set(index))
    if missing:
        raise PrecisionError(f"{path}: the FP8 checkpoint lacks {len(missing)} tensor(s), first {missing[0]!r}",
                             hint="save it again with accel.precision.save_fp8_model")
    for name in policy.fp8_layers():
        if index[name + ".weight"].accel_dtype not in dt.FLOAT8_DTYPES:
            raise PrecisionError(f"{path}: layer {name!r} is FP8 in {POLICY_FILE} but its weight is stored as "
                                 f"{index[name + '.weight'].accel_dtype.name}",
                                 hint="the policy and the weights disagree: save the model again")
    target = get_backend(backend)
    params = checkpoint.load_tensors([index[n] for n in sorted(expected)], target, None)
    tokenizer = Tokenizer.from_dir(path) if os.path.isfile(os.path.join(path, "tokenizer.json")) else None
    model = LlamaModel(config, params, target, tokenizer)
    model.fp8_policy = policy
    return model
