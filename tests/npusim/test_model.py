"""The bundled Llama model end to end on both chip profiles, against the numpy reference."""
import gc

import numpy as np
import pytest

import accel
import accel.models as models

from conftest import counts

NEW = 6


@pytest.fixture(scope="module")
def reference():
    model = models.load_pretrained(models.bundled_path(), backend="numpy")
    ids = model.tokenizer.encode("Once upon a time")
    return ids, model.forward(ids).numpy().astype(np.float64), model.generate(ids, NEW, stop_at_eos=False)


def _run(chip, dtype, ids):
    model = models.load_pretrained(models.bundled_path(), backend=chip, dtype=dtype)
    logits = model.forward(ids).numpy().astype(np.float64)
    return model, logits, model.generate(ids, NEW, stop_at_eos=False)


def test_ascend_float32_matches_the_reference_with_no_fallback(ascend, reference):
    ids, ref_logits, ref_tokens = reference
    _, logits, tokens = _run(ascend, None, ids)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert tokens == ref_tokens
    stats = accel.dispatch_stats()[ascend.spec]
    assert not any(c["fallback"] or c["downcast"] for c in stats.values())
    assert stats["attention"]["decomposed"] > 0, "float32 attention has no fused kernel on this chip"


def test_ascend_bfloat16_runs_fused_kernels_at_bfloat16_precision(ascend, reference):
    ids, ref_logits, ref_tokens = reference
    _, logits, tokens = _run(ascend, "bfloat16", ids)
    assert counts(ascend, "attention")["decomposed"] == 0 and counts(ascend, "rms_norm")["decomposed"] == 0
    deviation = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    assert 1e-4 < deviation < 0.03, deviation       # bfloat16 error (eps 2^-8): visible, and small
    assert tokens[:2] == ref_tokens[:2]


def test_minimal_chip_refuses_float32_matmul_by_default(minimal, reference):
    with pytest.raises(accel.UnsupportedError, match="matmul"):
        _run(minimal, None, reference[0])


def test_minimal_chip_with_host_fallback_matches_the_reference(minimal, reference):
    ids, ref_logits, ref_tokens = reference
    minimal.configure(dtype_policy="fallback")
    with pytest.warns(accel.AccelWarning):
        _, logits, tokens = _run(minimal, None, ids)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert tokens == ref_tokens
    assert counts(minimal, "matmul")["fallback"] > 0 and counts(minimal, "argmax")["fallback"] == NEW
    assert counts(minimal, "rms_norm")["decomposed"] > 0


def test_minimal_chip_bfloat16_with_downcast_runs_everything_on_chip_but_argmax(minimal, reference):
    ids, ref_logits, _ = reference
    minimal.configure(dtype_policy="downcast")
    with pytest.warns(accel.AccelWarning):
        model, logits, tokens = _run(minimal, "bfloat16", ids)
    assert counts(minimal, "matmul")["downcast"] > 0          # attention's float32 scores
    stats = accel.dispatch_stats()[minimal.spec]
    assert {op for op, c in stats.items() if c["fallback"]} == {"argmax"}
    assert np.abs(logits - ref_logits).max() / np.abs(ref_logits).max() < 0.03
    used = minimal.memory.in_use
    del model
    gc.collect()
    assert minimal.memory.in_use < used, "the weights were freed with the model"
