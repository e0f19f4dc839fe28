"""Damaged or odd model directories end in a ModelError that names the file and the field,
never in a silently different model, a read outside the model directory, or a traceback."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import accel
import accel.models
from accel.io import safetensors as st


@pytest.fixture
def model_dir(tmp_path):
    """A writable copy of the bundled model (config, weights, tokenizer)."""
    folder = tmp_path / "model"
    shutil.copytree(accel.models.bundled_path(), folder)
    return folder


def edit_config(folder, **changes):
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def write_raw_safetensors(path, header: dict, data: bytes):
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


# --- safetensors ------------------------------------------------------------------------------
def test_overlapping_data_offsets_are_refused_as_the_safetensors_library_does(tmp_path):
    path = tmp_path / "overlap.safetensors"
    write_raw_safetensors(path, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                 "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24))
    with pytest.raises(accel.ModelError) as error:
        st.read_header(str(path))
    text = str(error.value)
    assert "'a' and 'b' overlap" in text and "ends at byte 16" in text and "starts at 8" in text
    import safetensors  # the reference: it refuses this file too
    with pytest.raises(Exception):
        with safetensors.safe_open(str(path), framework="numpy") as f:
            f.get_tensor("b")


def test_adjacent_tensors_and_empty_ones_are_fine(tmp_path):
    path = tmp_path / "ok.safetensors"
    data = np.arange(8, dtype=np.float32).tobytes()
    write_raw_safetensors(path, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                 "e": {"dtype": "F32", "shape": [0], "data_offsets": [16, 16]},
                                 "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}, data)
    loaded = st.load_safetensors(str(path), backend="numpy")
    np.testing.assert_array_equal(loaded["b"].numpy(), [4, 5, 6, 7])


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE"])
def test_a_sharded_index_pointing_outside_the_model_directory_is_refused(tmp_path, shard):
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    st.save_safetensors(str(outside), {"w": np.ones(3, np.float32)})
    shard = str(outside) if shard == "ABSOLUTE" else shard
    (folder / st.INDEX_NAME).write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(accel.ModelError) as error:
        st.read_index(str(folder))
    assert "leaves the model directory" in str(error.value) and repr(shard) in str(error.value)


# --- config.json ------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, words", [
    ("tie_word_embeddings", "false", "tie_word_embeddings must be true or false, got 'false' (str)"),
    ("attention_bias", 0, "attention_bias must be true or false, got 0 (int)"),
    ("hidden_size", "128", "hidden_size must be an integer, got '128' (str)"),
    ("num_hidden_layers", 2.5, "num_hidden_layers must be an integer, got 2.5"),
    ("vocab_size", 0, "vocab_size must be an integer >= 1, got 0"),
    ("rms_norm_eps", "1e-5", "rms_norm_eps must be a finite number, got '1e-5' (str)"),
    ("max_position_embeddings", -1, "max_position_embeddings must be an integer >= 1"),
    ("rope_theta", 0, "rope_theta must be a number > 0, got 0"),
    ("rope_theta", -10000.0, "rope_theta must be a number > 0, got -10000.0"),
    ("rope_parameters", {"rope_type": "default", "rope_theta": -1.0}, "rope_theta must be a number > 0"),
])
def test_wrongly_typed_or_ranged_config_values_are_refused(model_dir, key, value, words):
    edit_config(model_dir, **{key: value})
    with pytest.raises(accel.ModelError) as error:
        accel.models.load_pretrained(str(model_dir), backend="numpy")
    assert words in str(error.value) and "config.json" in str(error.value)


def test_a_json_true_tie_still_ties_and_null_takes_the_default(model_dir):
    edit_config(model_dir, tie_word_embeddings=None, rope_theta=None)
    config = accel.models.LlamaConfig.from_file(str(model_dir))
    assert config.tie_word_embeddings is False and config.rope_theta == 10000.0
    edit_config(model_dir, tie_word_embeddings=True)
    assert accel.models.LlamaConfig.from_file(str(model_dir)).tie_word_embeddings is True


# --- max_position_embeddings ------------------------------------------------------------------
def test_generate_refuses_to_run_past_max_position_embeddings(model_dir):
    edit_config(model_dir, max_position_embeddings=16)
    model = accel.models.load_pretrained(str(model_dir), backend="numpy")
    prompt = list(range(2, 12))
    with pytest.raises(accel.ModelError) as error:
        model.generate(prompt, 7)
    assert "17 positions exceeds max_position_embeddings 16" in str(error.value)
    assert "prompt + new tokens <= 16" in str(error.value)
    assert len(model.generate(prompt, 6, stop_at_eos=False)) == 6  # 16 positions: fine
    with pytest.raises(accel.ModelError, match="exceeds max_position_embeddings 16"):
        model.forward([list(range(2, 19))])


def test_loading_as_an_integer_dtype_is_refused(model_dir):
    with pytest.raises(accel.ModelError, match="cannot load the weights as int8"):
        accel.models.load_pretrained(str(model_dir), backend="numpy", dtype="int8")

