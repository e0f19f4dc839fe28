"""The benchmark's model arithmetic against Hugging Face's own parameter count, and the goal
judge and the token agreement on hand-made figures."""
from __future__ import annotations

import math

import pytest

from accel.bench import goals, model_rows
from accel.bench.settings import MODEL_FULL, BenchSettings
from accel.models import LlamaConfig

CONFIG = LlamaConfig(model_type="llama", **MODEL_FULL)


def test_full_model_is_about_100m_parameters():
    assert 90e6 < CONFIG.num_parameters() < 110e6


@pytest.mark.parametrize("tied", [False, True])
def test_matmul_parameters_match_transformers(tied):
    """Weights read per token = every parameter but the embedding table, plus the LM head."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    small = LlamaConfig(model_type="llama", vocab_size=300, hidden_size=64, intermediate_size=96,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        tie_word_embeddings=tied)
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**small.to_dict()))
    embedding = hf.model.embed_tokens.weight.numel()
    total = sum(p.numel() for p in hf.parameters())  # a tied head is counted once
    expected = total if tied else total - embedding  # untied: the head is already in total
    assert model_rows.matmul_params(small) == expected
    assert small.num_parameters() == total


def test_prefill_flops_and_decode_bytes_by_hand():
    c = LlamaConfig(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1)
    # q 64 + k 32 + v 32 + o 64 + mlp 3*128 + 2 norms 16 + final norm 8 + head 80 = 680
    assert model_rows.matmul_params(c) == 680
    t = 3
    assert model_rows.prefill_flops(c, t) == 2 * 680 * 3 + 2 * 2 * 1 * 8 * 6  # pairs: 3*4/2 = 6
    # 2 (k, v) * 1 layer * 1 kv head * head dim 4 * 5 cached * batch 2 = 80 values
    assert model_rows.decode_bytes(c, 2, 5, 4) == (680 + 80) * 4


def test_measurements_run_cheapest_first():
    labels = [m[0] for m in model_rows.measurements(BenchSettings())]
    assert labels == ["prefill-128", "decode-b1", "prefill-512", "decode-b8"]


def test_token_agreement():
    assert model_rows.agreement({"d": [[1, 2, 3], [4, 5, 6]]}, {"d": [[1, 2, 3], [4, 5, 6]]}) == 1.0
    assert model_rows.agreement({"d": [1, 2, 9, 9]}, {"d": [1, 2, 3, 4], "other": [1]}) == 0.5
    assert math.isnan(model_rows.agreement({}, {"d": [1]}))


def _row(name, backend, mode, dtype, decode_tok_s, ratio, pct):
    return {"name": name, "backend": backend, "mode": mode, "dtype": dtype,
            "results": {"decode-b1": {"tokens_per_s": decode_tok_s, "ratio_to_hf": ratio,
                                      "pct_of_bandwidth_bound": pct}}}


def test_goals_pick_the_best_row_and_judge_it():
    results = {"model": {"measurements": ["prefill-128", "decode-b1"], "rows": [
        _row("HF", "torch:cpu", "hf", "float32", 10.0, None, 20.0),
        _row("jax compiled", "jax:cpu", "compiled", "float32", 17.0, 1.7, 34.0),
        _row("ort compiled", "onnxruntime:cpu", "compiled", "float32", 14.0, 1.4, 60.0),
        _row("torch eager", "torch:cpu", "eager", "float32", 8.0, 0.8, 16.0)]},
        "ops": [{"backend": "numpy", "size": "tiny", "overhead_us": v, "kernels": ["add"]} for v in (0.5, 0.9, 3.0)]
        + [{"backend": "numpy", "size": "tiny", "overhead_us": 50.0, "kernels": ["a", "b"]}]}
    judged = {g["goal"]: g for g in goals.judge(results)}
    compiled = judged["best compiled backend decode-b1 float32 vs HF"]
    assert compiled["value"] == 1.7 and compiled["by"] == "jax compiled" and compiled["met"] is True
    eager = judged["eager torch decode-b1 float32 vs HF"]
    assert eager["value"] == 0.8 and eager["met"] is False
    share = judged["best decode-b1 float32 share of the bandwidth bound"]
    assert share["value"] == 60.0 and share["by"] == "ort compiled" and share["met"] is True
    overhead = judged["dispatch overhead on numpy (median over single-kernel tiny ops)"]
    assert overhead["value"] == 0.9 and overhead["met"] is True  # the 2-kernel composite is left out
