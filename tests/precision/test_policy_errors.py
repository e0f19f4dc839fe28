"""Bad input gets an AccelError naming the layer and what to do: a policy for another model,
a malformed policy file, an unknown recipe, FP8 on a backend without float8 in strict mode."""
from __future__ import annotations

import json

import numpy as np
import pytest

import accel
import accel.models
from accel import precision
from accel.cli.main import main
from accel.models import LlamaConfig, LlamaModel
from accel.precision import PrecisionError

MICRO = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _policy_for(config, recipe="rowwise") -> dict:
    shapes = precision.linear_shapes(config)
    layers = {n: ({"format": "float8_e4m3fn", "recipe": recipe, "score": 0.0, "reason": "test"}
                  if n != "lm_head" else {"format": "bfloat16", "recipe": None, "reason": "deny"}) for n in shapes}
    return {"format": "accel-fp8-policy", "version": 1,
            "model": {"model_type": "llama", "layers": {n: list(s) for n, s in shapes.items()}}, "layers": layers}


@pytest.fixture
def micro():
    return LlamaModel.random(LlamaConfig(**MICRO), seed=0, backend=accel.reference_backend())


def test_policy_for_another_model_names_the_layer(micro):
    other = LlamaConfig(**dict(MICRO, intermediate_size=96))
    with pytest.raises(PrecisionError, match=r"model.layers.0.mlp.gate_proj.*\[96, 32\].*\[64, 32\]") as err:
        precision.apply_policy(micro, _policy_for(other))
    assert "accel fp8-plan" in err.value.hint
    deeper = LlamaConfig(**dict(MICRO, num_hidden_layers=3))
    with pytest.raises(PrecisionError, match=r"model.layers.2.self_attn.q_proj.*does not exist"):
        precision.plan_for(_policy_for(deeper), micro.config)
    shallower = _policy_for(micro.config)
    for n in [n for n in shallower["model"]["layers"] if n.startswith("model.layers.1.")]:
        del shallower["model"]["layers"][n], shallower["layers"][n]
    with pytest.raises(PrecisionError, match=r"does not know, first 'model.layers.1"):
        precision.plan_for(shallower, micro.config)


@pytest.mark.parametrize("mutate,match", [
    (lambda p: p.update(format="something"), "not an accel FP8 policy"),
    (lambda p: p.update(version=7), "version 7"),
    (lambda p: p.pop("layers"), "needs a 'model' object"),
    (lambda p: p["model"]["layers"].update({"model.layers.0.mlp.up_proj": [64]}), r"up_proj.*not \[out, in\]"),
    (lambda p: p["layers"].update({"ghost": {"format": "bfloat16"}}), "'ghost' is not among"),
    (lambda p: p["layers"]["model.layers.0.mlp.up_proj"].update(format="int4"), r"up_proj.*unknown format 'int4'"),
    (lambda p: p["layers"]["model.layers.0.mlp.up_proj"].pop("recipe"), r"up_proj.*needs a 'recipe'"),
    (lambda p: p["layers"]["model.layers.0.mlp.up_proj"].update(format="float8_e5m2"), r"up_proj.*runs float8_e4m3fn"),
])
def test_malformed_policy(micro, mutate, match):
    raw = _policy_for(micro.config)
    mutate(raw)
    with pytest.raises(PrecisionError, match=match):
        precision.load_policy(raw)


def test_unknown_recipe_names_the_layer_and_the_known_ones(micro):
    raw = _policy_for(micro.config, recipe="tensorwise_delayed")
    raw["layers"]["model.layers.1.mlp.down_proj"]["recipe"] = "mxfp8"
    with pytest.raises(PrecisionError, match=r"down_proj.*unknown FP8 recipe 'mxfp8'") as err:
        precision.load_policy(raw)
    assert "rowwise" in err.value.hint and "blockwise" in err.value.hint


def test_policy_files_not_found_or_not_json(tmp_path):
    with pytest.raises(PrecisionError, match="not found"):
        precision.load_policy(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PrecisionError, match="not valid JSON"):
        precision.load_policy(bad)


def test_cli_prints_one_line_and_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "accel-fp8-policy", "version": 1}))
    assert main(["generate", "--backend", "numpy", "--fp8", str(bad), "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("accel: error: FP8 policy") and "Traceback" not in err
    assert main(["fp8-plan", "--model", accel.models.bundled_path(), "--recipes", "nope"]) == 1
    assert "unknown FP8 recipe 'nope'" in capsys.readouterr().err


def test_fp8_on_a_backend_without_float8_in_strict_mode(micro):
    # npusim's default profile has no float8 tensors (see `accel info --backend npusim`)
    sim = accel.get_backend("npusim")
    assert accel.float8_e4m3fn not in sim.dtypes
    x = accel.tensor(np.ones((2, 32), np.float32), backend=sim)
    w = accel.tensor(np.ones((64, 32), np.float32), backend=sim)
    plan = precision.Fp8Plan({"model.layers.0.mlp.gate_proj": precision.get_recipe("rowwise")})
    with accel.strict(), precision.fp8_autocast(plan):
        with pytest.raises(PrecisionError, match=r"layer 'model.layers.0.mlp.gate_proj'.*npusim.*strict") as err:
            precision.linear("model.layers.0.mlp.gate_proj", x, w)
    assert "bfloat16" in err.value.hint
    # not strict: the layer runs unquantized, with one warning and a count
    precision.reset_layer_stats()
    with pytest.warns(accel.AccelWarning, match="no float8_e4m3fn.*unquantized"), precision.fp8_autocast(plan):
        y = precision.linear("model.layers.0.mlp.gate_proj", x, w)
    np.testing.assert_allclose(y.numpy(), 32.0)
    assert precision.skipped_layers() == {("model.layers.0.mlp.gate_proj", sim.spec): 1}
    assert precision.layer_stats() == {}
