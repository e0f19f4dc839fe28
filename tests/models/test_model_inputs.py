"""What a model accepts as token ids, and what it refuses: arrays and tensors of any library,
ids outside the vocabulary, NaN logits, and one model shared by several threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import accel
from accel.models import LlamaConfig, LlamaModel

CONFIG = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
PROMPTS = [[3, 14, 15, 92, 65, 35, 8, 9, 79, 32, 38], [2, 71, 82, 81, 82, 84, 59, 4, 5, 23, 53]]


@pytest.fixture
def model(backend):
    return LlamaModel.random(CONFIG, seed=1, backend=backend)


def logits_of(model, ids):
    return np.asarray(model.forward(ids).numpy(), np.float64)


# --- token ids of any kind --------------------------------------------------------------------
def test_a_2d_numpy_array_is_a_batch(model):
    want = logits_of(model, PROMPTS)
    assert want.shape == (2, 11, 97)
    np.testing.assert_array_equal(logits_of(model, np.array(PROMPTS)), want)
    np.testing.assert_array_equal(logits_of(model, np.array(PROMPTS, np.int32)), want)
    batch = model.generate(np.array(PROMPTS), 4, stop_at_eos=False)
    assert batch == model.generate(PROMPTS, 4, stop_at_eos=False) and len(batch) == 2


def test_torch_tensors_and_accel_tensors_are_token_ids(model):
    import torch

    want = logits_of(model, PROMPTS)
    np.testing.assert_array_equal(logits_of(model, torch.tensor(PROMPTS)), want)
    np.testing.assert_array_equal(logits_of(model, accel.tensor(PROMPTS, backend="numpy")), want)
    one = model.generate(PROMPTS[0], 3, stop_at_eos=False)
    assert model.generate(torch.tensor(PROMPTS[0]), 3, stop_at_eos=False) == one  # 1-d: one prompt
    assert model.generate(np.array(PROMPTS[0]), 3, stop_at_eos=False) == one


def test_float_ids_are_refused(model):
    with pytest.raises(accel.ModelError, match="input ids must be integers, got float64"):
        model.forward(np.array(PROMPTS, np.float64))


@pytest.mark.parametrize("bad", [-1, 97])
def test_a_token_id_outside_the_vocabulary_is_refused(model, bad):
    with pytest.raises(accel.IndexOutOfRangeError) as error:
        model.generate([bad, 5], 3)
    assert f"index {bad} is out of range [0, 97)" in str(error.value)
    assert "vocab_size" in str(error.value)


# --- NaN logits -------------------------------------------------------------------------------
def test_greedy_decoding_over_nan_logits_is_an_error(backend):
    params = dict(LlamaModel.random(CONFIG, seed=1, backend=backend).params)
    norm = params["model.norm.weight"]
    params["model.norm.weight"] = accel.from_numpy(np.full(norm.shape, np.nan, np.float32), backend)
    model = LlamaModel(CONFIG, params, backend)
    with pytest.raises(accel.OpError) as error:
        model.generate(PROMPTS[0], 5)
    assert "greedy decoding: the logits of row 0 are NaN (vocab 97)" in str(error.value)
    assert "weights for NaN" in str(error.value)
    with pytest.raises(accel.OpError, match="NaN or no finite entry"):
        model.generate(PROMPTS[0], 5, temperature=0.7, seed=0)


# --- one model, several threads ---------------------------------------------------------------
def test_generate_from_several_threads_gives_each_its_own_answer(model):
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0][3:], PROMPTS[1][:6]]
    want = [model.generate(p, 12, stop_at_eos=False) for p in prompts]
    assert len({tuple(w) for w in want}) == len(prompts)  # distinct answers: a mix-up shows
    got: dict[int, list] = {}
    errors: list = []
    start = threading.Barrier(len(prompts) * 2)

    def worker(slot: int, prompt: list[int]) -> None:
        try:
            start.wait()
            got[slot] = model.generate(prompt, 12, stop_at_eos=False)
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, prompts[i % len(prompts)]))
               for i in range(len(prompts) * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert [got[i] for i in range(len(threads))] == want + want
