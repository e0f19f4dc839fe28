"""Sampling (against transformers' logits warpers), reproducibility across backends, batching,
end-of-sequence, the tokenizer and streaming decode, and the bundled model."""
from __future__ import annotations

import numpy as np
import pytest

import accel
import accel.models
from accel.io.sampling import Sampler
from accel.io.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def bundled():
    return accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy")


# --- the sampler -----------------------------------------------------------------------------
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                                      (0.9, 20, 0.5), (1.0, 1, None), (2.0, None, 1e-3)])
def test_filtered_distribution_matches_transformers_warpers(temperature, top_k, top_p):
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    logits = np.random.default_rng(5).standard_normal(50) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                  + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p else []))
    warped = warpers(None, torch.tensor(logits[None], dtype=torch.float64))[0]
    ref = torch.softmax(warped, -1).numpy()
    ids, probs = Sampler(temperature, top_k, top_p, seed=0).distribution(logits)
    ours = np.zeros_like(ref)
    ours[ids] = probs
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_sampling_follows_its_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    sampler = Sampler(1.0, seed=11)
    draws = np.bincount([sampler.sample_row(logits) for _ in range(20000)], minlength=3) / 20000
    np.testing.assert_allclose(draws, [0.5, 0.3, 0.2], atol=0.015)  # ~4 standard errors


@pytest.mark.parametrize("kwargs,match", [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"),
                                          ({"top_p": 1.5}, "top_p")])
def test_sampler_rejects_bad_settings(kwargs, match):
    with pytest.raises(accel.AccelError, match=match):
        Sampler(**kwargs)


def test_sampler_refuses_nan_logits():
    with pytest.raises(accel.AccelError, match="NaN"):
        Sampler(1.0, seed=0).sample_row(np.array([0.0, np.nan]))


# --- generation ------------------------------------------------------------------------------
def test_sampled_text_is_reproducible_from_the_seed_and_the_same_on_every_backend(backend, bundled):
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=backend)
    prompt = model.tokenizer.encode("Hello")
    kw = dict(temperature=0.9, top_k=50, top_p=0.95)
    first = model.generate(prompt, 16, seed=7, **kw)
    assert model.last_generation.seed == 7
    assert model.generate(prompt, 16, seed=7, **kw) == first
    assert model.generate(prompt, 16, seed=8, **kw) != first
    assert bundled.generate(prompt, 16, seed=7, **kw) == first  # numpy reference, same draws


def test_greedy_equals_top_k_1_and_batch_equals_single(backend):
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=backend)
    a, b = model.tokenizer.encode("The cat sat on the mat")[:5], model.tokenizer.encode("One, two, three")[:5]
    greedy_a = model.generate(a, 8)
    assert model.generate(a, 8, temperature=1.0, top_k=1, seed=3) == greedy_a
    assert model.generate([a, b], 8) == [greedy_a, model.generate(b, 8)]


def test_generation_stops_at_end_of_sequence(bundled):
    prompt = bundled.tokenizer.encode("Hello")
    free = bundled.generate(prompt, 10, stop_at_eos=False)
    saved = bundled.config
    try:  # declare the 4th greedy token the end-of-sequence id: generation must stop right there
        bundled.config = accel.models.LlamaConfig.from_dict({**saved.to_dict(), "eos_token_id": free[3]})
        assert bundled.generate(prompt, 10) == free[:free.index(free[3]) + 1]
    finally:
        bundled.config = saved


def test_forward_continuation_needs_a_prefill():
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy")
    with pytest.raises(accel.ModelError, match="start_pos=0 first"):
        model.forward([5], start_pos=3)


def test_init_params_is_seeded_and_backend_independent(backend):
    config = accel.models.LlamaConfig.from_dict({
        "model_type": "qwen2", "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
    a = accel.models.init_params(config, seed=3, backend=backend)
    b = accel.models.init_params(config, seed=3, backend="numpy")
    assert set(a) == set(config.param_shapes())
    for name in a:
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
    w = b["model.layers.0.mlp.up_proj.weight"].numpy()
    assert abs(w.std() - config.initializer_range) < 0.004
    assert np.all(b["model.layers.0.self_attn.q_proj.bias"].numpy() == 0)


# --- tokenizer -------------------------------------------------------------------------------
def test_bundled_tokenizer_round_trips_any_text(bundled):
    tok = bundled.tokenizer
    text = "Hello, accel! Überprüfung — 加速器 🚀 tabs\tand\nnewlines"
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id is not None and tok.eos_ids
    assert tok.decode(ids) == text
    assert max(ids) < bundled.config.vocab_size


def test_stream_decoder_yields_exactly_the_full_decode(bundled):
    tok = bundled.tokenizer
    text = " more text: 加速器 🚀 done"
    prompt = tok.encode("Hello")
    new = tok.encode(text, add_special_tokens=False)
    decoder = tok.stream(prompt)
    pieces = [decoder.push(i) for i in new] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)  # never half a character


def test_tokenizer_reads_special_ids_from_tokenizer_config(tmp_path, bundled):
    bundled.tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": {"content": "</s>"}, "eos_token": "<s>"}')
    tok = Tokenizer.from_dir(str(tmp_path))
    hf = bundled.tokenizer.backend
    assert tok.bos_id == hf.token_to_id("</s>") and tok.eos_ids == (hf.token_to_id("<s>"),)


def test_missing_tokenizer_file_is_a_model_error(tmp_path):
    with pytest.raises(accel.ModelError, match="tokenizer file not found"):
        Tokenizer.from_dir(str(tmp_path))


def test_bundled_model_is_small_and_complete():
    import os

    folder = accel.models.bundled_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert os.path.isfile(os.path.join(folder, name)), name
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert total < 8e6
