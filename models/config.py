"""LlamaConfig: the model's hyper-parameters, parsed once from a Hugging Face `config.json`.

One frozen dataclass covers the Llama family we run: `llama` (also Yi, which ships as llama),
`qwen2` (q/k/v projections carry a bias) and `mistral` (Llama with a sliding window that we accept
only when it never bites). Both rope spellings are read: transformers < 5 writes `rope_theta` and
`rope_scaling`, transformers >= 5 writes `rope_parameters`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

from accel.core.errors import ModelError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency scaling ("llama3"); `None` on the config means plain RoPE."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LlamaConfig:
    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 0                    # 0: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False         # bias on q/k/v/o (llama's flag)
    qkv_bias: bool = False               # bias on q/k/v only (qwen2)
    mlp_bias: bool = False
    sliding_window: int | None = None    # mistral/qwen2: must be None or >= every sequence we run
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    torch_dtype: str | None = None       # the checkpoint's dtype as config.json states it
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(f"unsupported model_type {self.model_type!r}",
                             hint=f"accel runs the Llama family: {', '.join(SUPPORTED_MODEL_TYPES)} "
                                  "(Yi checkpoints use model_type 'llama')")
        if not self.head_dim:
            if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
                raise ModelError(f"hidden_size {self.hidden_size} is not divisible by "
                                 f"num_attention_heads {self.num_attention_heads}",
                                 hint="set head_dim in config.json or fix the head count")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads:
            raise ModelError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}",
                             hint="grouped-query attention needs heads % kv_heads == 0")
        if self.head_dim % 2:
            raise ModelError(f"head_dim {self.head_dim} is odd", hint="RoPE needs an even head_dim")

    # --- derived facts --------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model reads, by its Hugging Face name, with the shape it must have."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            shapes[p + "input_layernorm.weight"] = (h,)
            shapes[p + "self_attn.q_proj.weight"] = (self.q_size, h)
            shapes[p + "self_attn.k_proj.weight"] = (self.kv_size, h)
            shapes[p + "self_attn.v_proj.weight"] = (self.kv_size, h)
            shapes[p + "self_attn.o_proj.weight"] = (h, self.q_size)
            if self.attention_bias or self.qkv_bias:
                shapes[p + "self_attn.q_proj.bias"] = (self.q_size,)
                shapes[p + "self_attn.k_proj.bias"] = (self.kv_size,)
                shapes[p + "self_attn.v_proj.bias"] = (self.kv_size,)
            if self.attention_bias:
                shapes[p + "self_attn.o_proj.bias"] = (h,)
            shapes[p + "post_attention_layernorm.weight"] = (h,)
            shapes[p + "mlp.gate_proj.weight"] = (i, h)
            shapes[p + "mlp.up_proj.weight"] = (i, h)
            shapes[p + "mlp.down_proj.weight"] = (h, i)
            if self.mlp_bias:
                shapes[p + "mlp.gate_proj.bias"] = (i,)
                shapes[p + "mlp.up_proj.bias"] = (i,)
                shapes[p + "mlp.down_proj.bias"] = (h,)
        shapes["model.norm.weight"] = (h,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, h)
        return shapes

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def check_sequence(self, length: int) -> None:
        """Refuse a sequence longer than the model's positions (max_position_embeddings) or one
        the sliding window would cut (we implement full attention only)."""
        if length > self.max_position_embeddings:
            raise ModelError(
                f"{self.model_type}: a sequence of {length} positions exceeds max_position_embeddings "
                f"{self.max_position_embeddings} (the longest the model was trained for)",
                hint=f"keep prompt + new tokens <= {self.max_position_embeddings}: shorten the prompt "
                     "or ask for fewer new tokens")
        if self.sliding_window is not None and length > self.sliding_window:
            raise ModelError(
                f"{self.model_type}: a sequence of {length} positions exceeds sliding_window "
                f"{self.sliding_window}, which accel does not implement",
                hint=f"keep prompt + new tokens <= {self.sliding_window}, or set sliding_window to "
                     "null in config.json if the model was trained with full attention")

    # --- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "LlamaConfig":
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(f"{source}: unsupported model_type {model_type!r}",
                             hint=f"accel runs the Llama family: {', '.join(SUPPORTED_MODEL_TYPES)} "
                                  "(Yi checkpoints use model_type 'llama')")
        act = raw.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ModelError(f"{source}: hidden_act {act!r} is not supported",
                             hint="the Llama family uses silu; other activations need another model file")
        try:
            theta, scaling = _parse_rope(raw, source)
            sliding = raw.get("sliding_window")
            if model_type == "qwen2" and not raw.get("use_sliding_window", False):
                sliding = None  # qwen2 applies its window only when use_sliding_window is set
            if model_type == "llama":
                sliding = None
            field = _Fields(raw, source)
            eos = raw.get("eos_token_id")
            eos = () if eos is None else tuple(field.int_value("eos_token_id", e, 0) for e in
                                               (eos if isinstance(eos, list) else [eos]))
            heads = field.int("num_attention_heads", minimum=1)
            known = {f for f in cls.__dataclass_fields__}
            return cls(
                model_type=model_type,
                vocab_size=field.int("vocab_size", minimum=1),
                hidden_size=field.int("hidden_size", minimum=1),
                intermediate_size=field.int("intermediate_size", minimum=1),
                num_hidden_layers=field.int("num_hidden_layers", minimum=0),
                num_attention_heads=heads,
                num_key_value_heads=field.int("num_key_value_heads", heads, minimum=1),
                head_dim=field.int("head_dim", 0, minimum=0),
                rms_norm_eps=field.float("rms_norm_eps", 1e-6, positive=True),
                rope_theta=theta,
                rope_scaling=scaling,
                max_position_embeddings=field.int("max_position_embeddings", 2048, minimum=1),
                tie_word_embeddings=field.bool("tie_word_embeddings", False),
                attention_bias=field.bool("attention_bias", False) and model_type != "qwen2",
                qkv_bias=model_type == "qwen2",
                mlp_bias=field.bool("mlp_bias", False),
                sliding_window=None if sliding is None else field.int_value("sliding_window", sliding, 1),
                initializer_range=field.float("initializer_range", 0.02),
                bos_token_id=None if raw.get("bos_token_id") is None else field.int("bos_token_id", minimum=0),
                eos_token_id=eos,
                torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except KeyError as missing:
            raise ModelError(f"{source}: required field {missing.args[0]!r} is missing",
                             hint="config.json needs vocab_size, hidden_size, intermediate_size, "
                                  "num_hidden_layers and num_attention_heads") from None
        except (TypeError, ValueError) as bad:
            raise ModelError(f"{source}: a field has the wrong type: {bad}",
                             hint="compare config.json with a Hugging Face Llama config") from None

    @classmethod
    def from_file(cls, path: str) -> "LlamaConfig":
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise ModelError(f"no config.json at {path}",
                             hint="point at a Hugging Face model directory (config.json, "
                                  "model.safetensors, tokenizer.json)")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}", hint="config.json must be valid JSON") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{path} holds a {type(raw).__name__}, not a JSON object",
                             hint="config.json must be a JSON object")
        return cls.from_dict(raw, source=path)

    def to_dict(self) -> dict:
        """A Hugging Face style config.json (loadable by transformers' AutoConfig)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("extra", "rope_scaling", "qkv_bias")}
        out["eos_token_id"] = (None if not self.eos_token_id else self.eos_token_id[0]
                               if len(self.eos_token_id) == 1 else list(self.eos_token_id))
        out["rope_scaling"] = None if self.rope_scaling is None else {"rope_type": "llama3", **asdict(self.rope_scaling)}
        out["hidden_act"] = "silu"
        out["architectures"] = [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                 "mistral": "MistralForCausalLM"}[self.model_type]]
        if self.model_type == "qwen2":
            out.pop("attention_bias")
        return out


class _Fields:
    """Strict reads of config.json values: JSON true/false for flags (the string "false" is not
    false), integers for sizes, numbers for floats; a wrong type or range is a ModelError naming
    the key. A missing key takes the default; `null` counts as missing, as transformers reads it."""

    def __init__(self, raw: dict, source: str):
        self.raw, self.source = raw, source

    def _bad(self, key: str, value, want: str) -> ModelError:
        return ModelError(f"{self.source}: {key} must be {want}, got {value!r} ({type(value).__name__})",
                          hint=f"fix {key} in config.json (JSON true/false and numbers are not quoted)")

    def _get(self, key: str, default):
        value = self.raw.get(key)
        if value is None:
            if default is _REQUIRED:
                raise KeyError(key)
            return None, default
        return value, None

    def bool(self, key: str, default: bool) -> bool:
        value, fallback = self._get(key, default)
        if value is None:
            return fallback
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def int(self, key: str, default=None, *, minimum: int | None = None) -> int:
        value, fallback = self._get(key, _REQUIRED if default is None else default)
        return fallback if value is None else self.int_value(key, value, minimum)

    def int_value(self, key: str, value, minimum: int | None = None) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, value, "an integer")
        if minimum is not None and value < minimum:
            raise self._bad(key, value, f"an integer >= {minimum}")
        return value

    def float(self, key: str, default: float, *, positive: bool = False) -> float:
        value, fallback = self._get(key, default)
        return fallback if value is None else self.float_value(key, value, positive=positive)

    def float_value(self, key: str, value, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(key, value, "a finite number")
        if positive and value <= 0:
            raise self._bad(key, value, "a number > 0")
        return float(value)


_REQUIRED = object()


def _parse_rope(raw: dict, source: str) -> tuple[float, RopeScaling | None]:
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and "rope_type" not in params and params and \
            all(isinstance(v, dict) for v in params.values()):
        raise ModelError(f"{source}: per-layer rope_parameters are not supported",
                         hint="the Llama family uses one rope setting for every layer")
    scaling = raw.get("rope_scaling")
    theta = raw.get("rope_theta")
    partial = (params if isinstance(params, dict) else raw).get("partial_rotary_factor") or 1.0
    if float(partial) != 1.0:
        raise ModelError(f"{source}: partial_rotary_factor {partial} is not supported",
                         hint="the Llama family rotates the whole head dim; this checkpoint needs "
                              "another model file")
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
            scaling = params
    theta = 10000.0 if theta is None else _Fields(raw, source).float_value("rope_theta", theta, positive=True)
    if not scaling:
        return theta, None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in SUPPORTED_ROPE_TYPES:
        raise ModelError(f"{source}: rope type {kind!r} is not supported",
                         hint=f"supported rope types: {', '.join(SUPPORTED_ROPE_TYPES)}")
    try:
        return theta, RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as missing:
        raise ModelError(f"{source}: llama3 rope scaling lacks {missing.args[0]!r}",
                         hint="llama3 rope needs factor, low_freq_factor, high_freq_factor and "
                              "original_max_position_embeddings") from None
