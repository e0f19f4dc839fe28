"""`accel generate` and `accel demo` end to end on the bundled model."""
from __future__ import annotations

import accel.models
from accel.cli.main import main


def test_generate_streams_the_greedy_text(capsys):
    assert main(["generate", "--prompt", "Hello", "--max-new-tokens", "12", "--backend", "numpy"]) == 0
    out, err = capsys.readouterr()
    model = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy")
    ids = model.tokenizer.encode("Hello")
    expected = "Hello" + model.tokenizer.decode(model.generate(ids, 12))
    assert out.rstrip("\n") == expected
    assert "tokens/s" in err and "numpy" in err


def test_generate_with_sampling_prints_the_seed(capsys):
    args = ["generate", "--prompt", "Hi", "--max-new-tokens", "5", "--backend", "numpy",
            "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "4"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "seed 4" in first.err
    assert main(args) == 0
    assert capsys.readouterr().out == first.out


def test_generate_reports_a_bad_model_directory(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "none"), "--backend", "numpy"]) == 1
    assert "model directory not found" in capsys.readouterr().err


def test_demo_runs_the_reference_and_prints_speed_and_op_stats(capsys):
    assert main(["demo", "--backend", "numpy", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "== numpy" in out and "tokens/s" in out and "max |logit diff|" in out
    assert "decomposed" in out and "host fallback 0 calls" in out
