"""The sampled corpus (accel.models.corpus) and TokenData.from_ids: the stories are the bundled
model's own text (at a vanishing temperature, Hugging Face's greedy continuation of bos), laid
out as from_text_file lays out documents, reproducible from the seed."""
from __future__ import annotations

import numpy as np
import pytest

import accel
import accel.models
from accel.models.corpus import sample_corpus
from accel.train.data import TokenData


@pytest.fixture(scope="module")
def bundled():
    return accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy")


def stories(ids: np.ndarray, bos: int, eos: int) -> list[list[int]]:
    ends = np.flatnonzero(ids == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert ends[-1] == len(ids) - 1 and all(ids[starts] == bos)
    return [ids[s + 1:e].tolist() for s, e in zip(starts, ends)]


def test_stories_are_the_models_text(bundled):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(accel.models.bundled_path(), torch_dtype=torch.float32)
    tok = bundled.tokenizer
    bos, eos = tok.bos_id, tok.eos_ids[0]
    ids = np.asarray(sample_corpus(bundled, 60, seed=3, temperature=1e-6, batch=2, story_tokens=24))
    with torch.no_grad():
        greedy = hf.generate(torch.tensor([[bos]]), max_new_tokens=24, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos)[0, 1:].tolist()
    want = greedy[:greedy.index(eos)] if eos in greedy else greedy
    got = stories(ids, bos, eos)
    assert len(ids) >= 60 and len(got) == 2 * -(-60 // (2 * (len(want) + 2)))
    assert all(story == want for story in got)


def test_sampling_is_reproducible_from_the_seed(bundled):
    tok = bundled.tokenizer
    a = np.asarray(sample_corpus(bundled, 300, seed=0, batch=4, story_tokens=40))
    b = np.asarray(sample_corpus(bundled, 300, seed=0, batch=4, story_tokens=40))
    c = np.asarray(sample_corpus(bundled, 300, seed=1, batch=4, story_tokens=40))
    assert np.array_equal(a, b) and not np.array_equal(a[:len(c)], c[:len(a)])
    got = stories(a, tok.bos_id, tok.eos_ids[0])
    assert len(got) % 4 == 0 and len({tuple(s) for s in got}) > 1  # sampled, not one story repeated
    assert all(0 <= i < bundled.config.vocab_size for i in a)


@pytest.mark.parametrize("kwargs", [dict(tokens=0), dict(tokens=10, temperature=0.0), dict(tokens=10, batch=0)])
def test_bad_settings_are_refused(bundled, kwargs):
    tokens = kwargs.pop("tokens")
    with pytest.raises(accel.AccelError, match="sample_corpus"):
        sample_corpus(bundled, tokens, **kwargs)


def test_a_tokenizer_without_bos_is_refused(bundled):
    tok = bundled.tokenizer
    saved, tok.bos_id = tok.bos_id, None
    try:
        with pytest.raises(accel.AccelError, match="needs a tokenizer with bos and eos ids") as err:
            sample_corpus(bundled, 10)
        assert "tokenizer.json" in err.value.hint
    finally:
        tok.bos_id = saved


def test_token_data_from_ids_holds_out_the_tail():
    ids = np.arange(100) % 7
    data = TokenData.from_ids(ids, "test ids", val_fraction=0.05)
    assert np.array_equal(data.train, ids[:95]) and np.array_equal(data.val, ids[95:])
    assert data.train.dtype == np.int64 and data.sha256 == TokenData.from_ids(ids.copy(), "again").sha256
    assert TokenData.from_ids(ids, "x").sha256 != TokenData.from_ids(ids[::-1], "x").sha256
    with pytest.raises(accel.AccelError, match="one flat sequence"):
        TokenData.from_ids(ids.reshape(10, 10), "grid")
