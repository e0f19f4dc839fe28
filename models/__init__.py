"""Llama-family models written only against accel (installed as `accel.models`).

    model = accel.models.load_pretrained("path/to/hf-model", backend="numpy")
    ids = model.tokenizer.encode("Hello")
    print(model.tokenizer.decode(model.generate(ids, max_new_tokens=20)))

`bundled_path()` is a small model shipped with the package, so demos download nothing.
"""
from __future__ import annotations

import os
import warnings

from accel import precision
from accel.io import safetensors as checkpoint
from accel.core.dispatch import AccelWarning
from accel.core.dtypes import as_dtype
from accel.core.errors import ModelError
from accel.core.registry import get_backend
from accel.io.tokenizer import Tokenizer

from .config import LlamaConfig, RopeScaling
from .kv_cache import KVCache
from .llama import forward, init_params, rope_inv_freq
from .model import GenerationStats, LlamaModel

__all__ = ["LlamaConfig", "RopeScaling", "KVCache", "LlamaModel", "GenerationStats", "forward",
           "init_params", "rope_inv_freq", "load_pretrained", "load_params", "bundled_path"]

# Tensors a Hugging Face checkpoint may carry that the model recomputes instead of reading.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def bundled_path() -> str:
    """The directory of the small model shipped with accel (config, safetensors, tokenizer)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")


def load_params(path: str, config: LlamaConfig, backend=None, dtype=None, mmap: bool = False) -> dict:
    """Stream the weights of `path` onto `backend`, checked against `config` before any is read.
    Each weight gets memory of its own unless `mmap` (see accel.io.safetensors for its risk)."""
    index = checkpoint.read_index(path)
    expected = config.param_shapes()
    missing = [n for n in expected if n not in index]
    if missing:
        raise ModelError(f"{path}: the checkpoint lacks {len(missing)} tensor(s) config.json calls for: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                         hint="check that config.json belongs to these weights (layer count, "
                              "tie_word_embeddings, attention_bias)")
    for name, shape in expected.items():
        info = index[name]
        if info.shape != shape:
            raise ModelError(
                f"{path}: tensor {name!r} has shape {list(info.shape)} but config.json implies {list(shape)}",
                hint="config.json and the weights disagree: fix hidden_size / intermediate_size / "
                     "num_attention_heads / num_key_value_heads / head_dim / vocab_size in config.json, "
                     "or use the config that was saved with these weights")
        if info.accel_dtype.kind != "f":
            raise ModelError(f"{path}: tensor {name!r} is {info.dtype}, not floating point",
                             hint="quantized checkpoints are not supported; use a float16/bfloat16/float32 one")
    unused = sorted(n for n in index if n not in expected and not n.endswith(_IGNORED_SUFFIXES)
                    and not (config.tie_word_embeddings and n == "lm_head.weight"))
    if unused:
        warnings.warn(f"accel: {path} holds {len(unused)} tensor(s) the {config.model_type} model does not "
                      f"use, left unread: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}",
                      AccelWarning, stacklevel=3)
    if dtype is None:  # one dtype for the whole model: the embedding's, as stored
        dtype = index["model.embed_tokens.weight"].accel_dtype
    elif not as_dtype(dtype).is_floating:
        raise ModelError(f"{path}: cannot load the weights as {as_dtype(dtype).name}",
                         hint="pick a floating dtype: float32, bfloat16, float16 (float8 via the "
                              "precision policy)")
    return checkpoint.load_tensors([index[n] for n in expected], backend, dtype, mmap=mmap)


def load_pretrained(path: str, backend=None, dtype=None, mmap: bool = False, fp8=None) -> LlamaModel:
    """A Hugging Face-format model directory as a LlamaModel on `backend` (default: current).

    Reads config.json, model.safetensors (or a sharded model.safetensors.index.json) streamed
    tensor by tensor, and tokenizer.json when present (then `model.tokenizer` is set).
    `dtype` casts the weights (e.g. "bfloat16"); None keeps the checkpoint's. The weights get
    memory of their own (the model does not depend on the file once loaded); `mmap=True` keeps
    them mapped to the file instead: no copy on host backends, but truncating the file later
    kills the process (SIGBUS) and rewriting it changes the model (accel.io.safetensors).
    `fp8` (a policy file, dict or accel.precision.Policy) stores the policy's layers in FP8 with
    their scales; a directory saved by accel.precision.save_fp8_model loads in FP8 as it is.
    """
    path = os.fspath(path)
    if fp8 is not None or precision.is_fp8_checkpoint(path):  # docs/fp8.md
        model = precision.load_fp8_model(path, backend) if precision.is_fp8_checkpoint(path) else None
        if model is None:
            model = load_pretrained(path, backend, dtype, mmap)
        return precision.apply_policy(model, fp8) if fp8 is not None else model
    if not os.path.isdir(path):
        raise ModelError(f"model directory not found: {path}",
                         hint="pass a directory with config.json and model.safetensors "
                              "(accel.models.bundled_path() is a small one)")
    config = LlamaConfig.from_file(path)
    target = get_backend(backend)
    params = load_params(path, config, target, dtype, mmap=mmap)
    tokenizer = Tokenizer.from_dir(path) if os.path.isfile(os.path.join(path, "tokenizer.json")) else None
    return LlamaModel(config, params, target, tokenizer)
