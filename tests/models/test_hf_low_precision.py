"""bfloat16 / float16 weights: our logits must be no further from transformers' float32 logits
than transformers' own run in that dtype is (an accuracy bar set by the reference, not by us)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import accel
import accel.models
from accel.precision.metrics import nmse

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("hf_model", ["llama-gqa", "qwen2"], indirect=True)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_logits_are_as_good_as_transformers(hf_model, dtype, backend):
    hf, folder = hf_model
    ids = np.random.default_rng(4).integers(0, hf.config.vocab_size, size=(2, 11))
    with torch.no_grad():
        ref32 = hf(torch.tensor(ids)).logits.double().numpy()
        hf_low = copy.deepcopy(hf).to(getattr(torch, dtype))  # the session's model stays float32
        theirs = hf_low(torch.tensor(ids)).logits.double().numpy()
    model = accel.models.load_pretrained(folder, backend=backend, dtype=dtype)
    assert model.dtype is accel.as_dtype(dtype)
    ours = np.asarray(model.forward(ids.tolist()).numpy(), np.float64)
    # 1.5x head room: rounding points differ between implementations of the same dtype
    assert nmse(ours, ref32) <= 1.5 * nmse(theirs, ref32), (nmse(ours, ref32), nmse(theirs, ref32))
    assert nmse(ours, ref32) < 5e-4  # and small in absolute terms (bf16 eps is 8e-3)
