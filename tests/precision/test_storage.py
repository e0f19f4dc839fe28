"""FP8 inference: weights stored in float8 with their scales (about half of bfloat16's bytes),
saved and loaded as safetensors (F8_E4M3), logits and greedy tokens against the unquantized model."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import accel
import accel.models
from accel import precision
from accel.precision import nmse


def _all_fp8_policy(model, recipe: str) -> dict:
    shapes = precision.linear_shapes(model.config)
    return {"format": "accel-fp8-policy", "version": 1,
            "model": {"model_type": "llama", "layers": {n: list(s) for n, s in shapes.items()}},
            "layers": {n: ({"format": "float8_e4m3fn", "recipe": recipe} if n != "lm_head" else {"format": "bfloat16"})
                       for n in shapes}}


@pytest.mark.parametrize("recipe", ["tensorwise_current", "rowwise", "blockwise"])
def test_weights_stored_in_fp8_take_about_half_of_bfloat16(recipe):
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=accel.reference_backend())
    reference = {k: v.numpy() for k, v in model.params.items()}
    precision.apply_policy(model, _all_fp8_policy(model, recipe))
    w = model.params["model.layers.1.mlp.up_proj.weight"]
    assert w.dtype is accel.float8_e4m3fn
    mem = precision.weight_memory(model)
    assert mem["fp8_layers"] == 28 and 0.5 <= mem["ratio_to_bfloat16"] < 0.52, mem
    # the stored values are the ml_dtypes rounding of weight / scale, the scale from each block's amax
    s = model.params["model.layers.1.mlp.up_proj.weight_scale"].numpy()
    if recipe == "rowwise":
        raw = reference["model.layers.1.mlp.up_proj.weight"]
        want_s = (np.abs(raw).max(1, keepdims=True) / np.float32(448)).astype(np.float32)
        np.testing.assert_array_equal(s, want_s)
        want_q = np.clip(raw / want_s, -448, 448).astype(ml_dtypes.float8_e4m3fn)
        np.testing.assert_array_equal(w.numpy().view(np.uint8), want_q.view(np.uint8))


def test_fp8_model_saves_and_loads_as_safetensors(tmp_path):
    src = accel.models.bundled_path()
    model = accel.models.load_pretrained(src, backend="torch:cpu", fp8=_all_fp8_policy(
        accel.models.load_pretrained(src, backend="numpy"), "blockwise"))
    ids = model.tokenizer.encode("Once upon a time")
    logits = model.forward(ids).numpy()
    out = precision.save_fp8_model(model, str(tmp_path / "fp8"), source_dir=src)
    # an independent reader sees float8 weights and float32 scales
    from safetensors import safe_open

    with safe_open(f"{out}/model.safetensors", framework="pt") as f:
        import torch

        assert f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype == torch.float8_e4m3fn
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight_scale").dtype == torch.float32
        assert f.get_tensor("lm_head.weight").dtype == torch.float32
    header = json.loads(open(f"{out}/model.safetensors", "rb").read()[8:8 + int.from_bytes(
        open(f"{out}/model.safetensors", "rb").read(8), "little")])
    assert header["model.layers.2.self_attn.q_proj.weight"]["dtype"] == "F8_E4M3"
    loaded = accel.models.load_pretrained(out, backend="numpy")
    assert loaded.params["model.layers.2.self_attn.q_proj.weight"].dtype is accel.float8_e4m3fn
    np.testing.assert_allclose(loaded.forward(ids).numpy(), logits, rtol=1e-4, atol=1e-4)
    assert loaded.generate(ids, 8) == model.generate(ids, 8)


def test_stored_weight_linear_against_numpy():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((40, 300)) * 100).astype(ml_dtypes.float8_e4m3fn)
    s = rng.uniform(1e-3, 1e-2, (1, 3)).astype(np.float32)   # blockwise 128x128 over (40, 300)
    x = rng.standard_normal((3, 300)).astype(np.float32)
    y = precision.linear("l", accel.tensor(x, backend="numpy"), accel.from_numpy(w, "numpy"), None,
                         accel.from_numpy(s, "numpy")).numpy()
    deq = w.astype(np.float64) * np.repeat(s, 128, 1)[:, :300]
    assert precision.layer_stats()["l"] == {"blockwise": 1}
    xq = np.empty_like(x, dtype=np.float64)
    for j in range(0, 300, 128):  # 1x128 activation tiles
        blk = x[:, j:j + 128]
        sx = (np.abs(blk).max(1, keepdims=True) / np.float32(448)).astype(np.float32)
        xq[:, j:j + 128] = (blk / sx).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * sx
    np.testing.assert_allclose(y, xq @ deq.T, rtol=1e-5, atol=1e-4)


def test_fp8_inference_against_the_unquantized_model(capsys):
    """Greedy-token agreement and logit NMSE of the default inference policy (first/last blocks
    and the LM head in high precision) against float32, over four prompts. Reported, with loose
    bounds."""
    src = accel.models.bundled_path()
    base = accel.models.load_pretrained(src, backend="torch:cpu")
    policy = precision.plan(base, precision.calibration_batches(
        base, __import__("accel.cli.train", fromlist=["x"]).default_data(), 2, 4, 48), purpose="inference")
    fp8 = accel.models.load_pretrained(src, backend="torch:cpu", fp8=policy)
    agree = total = 0
    errs = []
    for prompt in ("Once upon a time", "The cat", "Tom and Mia went", "One day, a little"):
        ids = base.tokenizer.encode(prompt)
        errs.append(nmse(fp8.forward(ids).numpy(), base.forward(ids).numpy()))
        a, b = fp8.generate(ids, 24), base.generate(ids, 24)
        agree += sum(x == y for x, y in zip(a, b))
        total += len(b)
    with capsys.disabled():
        print(f"\n[fp8 inference] {policy.summary()['fp8_layers']} FP8 layers; greedy agreement "
              f"{agree}/{total}; logit NMSE mean {np.mean(errs):.3g}, max {np.max(errs):.3g}")
    assert np.max(errs) < 1e-2 and agree / total > 0.5
