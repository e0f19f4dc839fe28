"""A corpus sampled from a model: as many tokens as a run needs, in the style the model learned.

A comparison of a few hundred training steps (FP8 against bfloat16, docs/fp8.md) on the bundled
34 KB of stories cycles its 12.9 k training tokens a dozen times: the runs then memorise, and
where the loss falls fastest two runs that differ in the last bit part by percents (float32 and
bfloat16 alone by 0.5–2 % at lr 1e-3). Stories sampled from the bundled model at temperature 1
give a stream that a run reads about once, like pretraining data.

Documents are laid out as `TokenData.from_text_file` lays them out (bos, the story, eos).
Sampling draws from Philox(seed) on the host; the logits, and so a near-tie draw, follow the
backend, so name the backend with the seed when a figure depends on the corpus.
"""
from __future__ import annotations

from accel.core.errors import ModelError


def sample_corpus(model, tokens: int, *, seed: int = 0, temperature: float = 1.0, batch: int = 64,
                  story_tokens: int = 400) -> list[int]:
    """At least `tokens` token ids (for `TokenData.from_ids`): batches of `batch` stories of up
    to `story_tokens` new tokens each, sampled from `model` (a LlamaModel) starting at bos;
    batch i uses seed + i."""
    tok = model.tokenizer
    if tok.bos_id is None or not tok.eos_ids:
        raise ModelError("sampling a corpus needs a tokenizer with bos and eos ids",
                         hint="use a model whose tokenizer.json names its bos and eos tokens")
    if tokens < 1 or batch < 1 or story_tokens < 1 or temperature <= 0:
        raise ModelError(f"sample_corpus: tokens, batch, story_tokens must be >= 1 and temperature > 0 "
                         f"(got {tokens}, {batch}, {story_tokens}, {temperature})",
                         hint="e.g. tokens=700_000, temperature=1.0")
    bos, eos = tok.bos_id, tok.eos_ids[0]
    ids: list[int] = []
    i = 0
    while len(ids) < tokens:  # every batch adds at least bos and eos per story: it ends
        for story in model.generate([[bos]] * batch, story_tokens, temperature=temperature, seed=seed + i):
            ids += [bos, *(story[:story.index(eos)] if eos in story else story), eos]
        i += 1
    return ids
