"""config.json parsing and the errors a user meets with a bad model directory."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import accel
import accel.models
from accel.io.safetensors import load_safetensors, save_safetensors
from accel.models import LlamaConfig, rope_inv_freq

BASE = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2}


def test_parses_both_rope_spellings_the_same():
    old = LlamaConfig.from_dict({**BASE, "rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}})
    new = LlamaConfig.from_dict({**BASE, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    assert old == new and old.rope_scaling.factor == 8.0 and old.rope_theta == 500000.0
    legacy = LlamaConfig.from_dict({**BASE, "rope_scaling": {"type": "default"}})
    assert legacy.rope_scaling is None and legacy.rope_theta == 10000.0


@pytest.mark.parametrize("rope", [None, {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}])
def test_rope_frequencies_match_transformers(rope):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    raw = {**BASE, "hidden_size": 256, "num_attention_heads": 2, "rope_theta": 500000.0,
           "max_position_embeddings": 256}
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in raw.items() if k != "model_type"},
                                      **({"rope_scaling": rope} if rope else {}))
    if rope:
        ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    else:
        ref = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float) / 128))
    ours = rope_inv_freq(LlamaConfig.from_dict({**raw, **({"rope_scaling": rope} if rope else {})}))
    # transformers blends the llama3 middle band in float32, we in float64 then round: a few
    # float32 ulps apart (measured 5e-7), far below what moves a logit at 1e-4.
    np.testing.assert_allclose(np.asarray(ours, np.float32), ref.numpy(), rtol=1e-6, atol=0)


def test_qwen2_has_qkv_bias_and_ignores_an_unused_window():
    c = LlamaConfig.from_dict({**BASE, "model_type": "qwen2", "sliding_window": 8, "use_sliding_window": False})
    assert c.qkv_bias and c.sliding_window is None
    shapes = c.param_shapes()
    assert shapes["model.layers.0.self_attn.q_proj.bias"] == (32,)
    assert shapes["model.layers.0.self_attn.k_proj.bias"] == (16,)
    assert "model.layers.0.self_attn.o_proj.bias" not in shapes


def test_mistral_sliding_window_shorter_than_the_sequence_is_refused():
    c = LlamaConfig.from_dict({**BASE, "model_type": "mistral", "sliding_window": 16})
    c.check_sequence(16)
    with pytest.raises(accel.ModelError, match="exceeds sliding_window 16") as info:
        c.check_sequence(17)
    assert "null" in info.value.hint


def test_mistral_window_is_enforced_by_the_model():
    c = LlamaConfig.from_dict({**BASE, "model_type": "mistral", "sliding_window": 8})
    model = accel.models.LlamaModel.random(c, seed=0, backend="numpy")
    model.forward(list(range(8)))
    with pytest.raises(accel.ModelError, match="sliding_window"):
        model.generate(list(range(6)), max_new_tokens=5)


@pytest.mark.parametrize("raw,match", [
    ({**BASE, "model_type": "gpt2"}, "unsupported model_type 'gpt2'"),
    ({**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
    ({**BASE, "hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({k: v for k, v in BASE.items() if k != "hidden_size"}, "'hidden_size' is missing"),
    ({**BASE, "num_key_value_heads": 3}, "not a multiple"),
    ({**BASE, "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}, "partial_rotary_factor"),
])
def test_bad_configs_raise_model_errors_with_hints(raw, match):
    with pytest.raises(accel.ModelError, match=match) as info:
        LlamaConfig.from_dict(raw)
    assert info.value.hint


def test_to_dict_round_trips_and_transformers_reads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = LlamaConfig.from_dict({**BASE, "tie_word_embeddings": True, "eos_token_id": [1, 2]})
    assert LlamaConfig.from_dict(c.to_dict()) == c
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    hf = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert hf.num_key_value_heads == 2 and hf.tie_word_embeddings


# --- bad model directories -------------------------------------------------------------------
def _copy(src: str, dst) -> str:
    dst = str(dst)
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        raw = json.load(f)
    raw.update(changes)
    with open(path, "w") as f:
        json.dump(raw, f)


def test_unsupported_model_type_directory(llama_dir, tmp_path):
    folder = _copy(llama_dir, tmp_path / "m")
    _edit_config(folder, model_type="bert")
    with pytest.raises(accel.ModelError, match="unsupported model_type 'bert'") as info:
        accel.models.load_pretrained(folder, backend="numpy")
    assert "qwen2" in info.value.hint


def test_shape_that_contradicts_config_names_tensor_both_shapes_and_fix(llama_dir, tmp_path):
    folder = _copy(llama_dir, tmp_path / "m")
    _edit_config(folder, intermediate_size=80)
    with pytest.raises(accel.ModelError) as info:
        accel.models.load_pretrained(folder, backend="numpy")
    msg = str(info.value)
    assert "'model.layers.0.mlp.gate_proj.weight'" in msg and "[96, 64]" in msg and "[80, 64]" in msg
    assert "intermediate_size" in info.value.hint


def test_missing_tensor_is_named(llama_dir, tmp_path):
    folder = _copy(llama_dir, tmp_path / "m")
    _edit_config(folder, num_hidden_layers=3)
    with pytest.raises(accel.ModelError, match="model.layers.2.") as info:
        accel.models.load_pretrained(folder, backend="numpy")
    assert "num_hidden_layers" in info.value.hint or "layer count" in info.value.hint


def test_unused_tensors_are_reported_not_silently_dropped(llama_dir, tmp_path):
    folder = _copy(llama_dir, tmp_path / "m")
    path = os.path.join(folder, "model.safetensors")
    weights = load_safetensors(path, backend="numpy")
    weights["model.layers.0.mystery.weight"] = accel.from_numpy(np.ones(3, np.float32))
    save_safetensors(path, weights)
    with pytest.warns(accel.AccelWarning, match="mystery"):
        accel.models.load_pretrained(folder, backend="numpy")


def test_missing_directory_and_missing_config(tmp_path):
    with pytest.raises(accel.ModelError, match="not found"):
        accel.models.load_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(accel.ModelError, match="no config.json"):
        accel.models.load_pretrained(str(tmp_path))


def test_truncated_weights_in_a_model_directory(llama_dir, tmp_path):
    folder = _copy(llama_dir, tmp_path / "m")
    path = os.path.join(folder, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(accel.ModelError, match="truncated"):
        accel.models.load_pretrained(folder, backend="numpy")
