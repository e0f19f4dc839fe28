"""The model against Hugging Face transformers on the same weights: logits, greedy tokens and
KV-cache decoding, for every architecture and config feature we claim (docs/conformance.md:
float32 logits within rtol 1e-4 / atol 1e-5, identical greedy tokens)."""
from __future__ import annotations

import numpy as np
import pytest

import accel
import accel.models

from hf_tiny import VARIANTS

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.parametrize("hf_model", sorted(VARIANTS), indirect=True)

PROMPT_LEN = 11
NEW_TOKENS = 20


def prompt(vocab: int, seed: int = 1, length: int = PROMPT_LEN, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, length))


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.double().numpy()


def test_logits_match_transformers(hf_model, backend):
    hf, folder = hf_model
    ids = prompt(hf.config.vocab_size, batch=2)
    model = accel.models.load_pretrained(folder, backend=backend)
    assert model.dtype is accel.float32
    ours = model.forward(ids.tolist()).numpy()
    assert ours.shape == (2, PROMPT_LEN, hf.config.vocab_size)
    ref = hf_logits(hf, ids)
    assert np.abs(ref).max() > 1.0, "logits too flat to tell a wrong op from a right one"
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    # the functional form training uses: no cache, nothing in place
    positions = accel.tensor(list(range(PROMPT_LEN)), dtype=accel.int64, backend=backend)
    ids_t = accel.tensor(ids, dtype=accel.int64, backend=backend)
    pure = accel.models.forward(model.params, model.config, ids_t, positions).numpy()
    np.testing.assert_allclose(pure, ref, rtol=1e-4, atol=1e-5)


def test_greedy_tokens_match_transformers_generate(hf_model, backend):
    hf, folder = hf_model
    ids = prompt(hf.config.vocab_size, seed=2)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                          min_new_tokens=NEW_TOKENS)[0, PROMPT_LEN:].tolist()
    model = accel.models.load_pretrained(folder, backend=backend)
    streamed = []
    ours = model.generate(ids[0].tolist(), NEW_TOKENS, stream=streamed.append)
    assert ours == ref
    assert streamed == ours and len(ours) == NEW_TOKENS


def test_kv_cache_decode_equals_full_sequence(hf_model, backend):
    hf, folder = hf_model
    ids = prompt(hf.config.vocab_size, seed=3, batch=2)  # the logits test's shapes: compiled once
    model = accel.models.load_pretrained(folder, backend=backend)
    full = model.forward(ids.tolist()).numpy()
    # a prefill of 5, a chunk of 3, then one token at a time: every logit as in one pass
    pieces = [model.forward(ids[:, :5].tolist(), 0).numpy(), model.forward(ids[:, 5:8].tolist(), 5).numpy()]
    pieces += [model.forward(ids[:, i:i + 1].tolist(), i).numpy() for i in range(8, PROMPT_LEN)]
    stepped = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(stepped, full, rtol=1e-5, atol=1e-5)
    # ... and a fresh prompt reuses the cache without seeing the stale entries
    again = model.forward(ids[:, :5].tolist(), 0).numpy()
    np.testing.assert_allclose(again, full[:, :5], rtol=1e-5, atol=1e-5)
