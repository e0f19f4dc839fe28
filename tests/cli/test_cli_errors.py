"""Every bad value given to the CLI ends in one `accel: error: ...` line (plus its HINT) and a
non-zero exit status: no traceback, and nothing nonsensical accepted with exit 0."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import accel.models
from accel.cli.main import main
from accel.io import safetensors as st


def fails_cleanly(capsys, argv, *words):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, (code, out, err)
    assert "Traceback" not in err and err.startswith("accel: error: "), err
    assert len(err.strip().splitlines()) <= 2, err  # the error line and its HINT
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    return out


def run_cli(args, env=None):
    """The real entry point in a fresh process (environment read at backend creation)."""
    return subprocess.run([sys.executable, "-m", "accel.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args, words", [
    (["--temperature", "nan"], ["temperature must be a finite number >= 0, got nan"]),
    (["--temperature", "-1"], ["temperature must be a finite number >= 0, got -1.0"]),
    (["--seed", "-1"], ["seed must be an integer >= 0 or None, got -1"]),
    (["--top-k", "0"], ["top_k must be a positive integer"]),
    (["--top-p", "1.5"], ["top_p must lie in (0, 1]"]),
    (["--max-new-tokens", "-3"], ["max_new_tokens must be >= 0, got -3"]),
    (["--max-new-tokens", "600"], ["exceeds max_position_embeddings 512"]),
    (["--dtype", "int8"], ["cannot load the weights as int8"]),
    (["--backend", "nosuch"], ["unknown backend 'nosuch'"]),
])
def test_generate_bad_values(capsys, args, words):
    out = fails_cleanly(capsys, ["generate", "--backend", "numpy", *args], *words)
    assert out == ""  # not even the prompt is echoed before the error


def test_generate_non_utf8_prompt():
    # argv bytes that are not UTF-8 reach Python as lone surrogates (PEP 383)
    child = subprocess.run([sys.executable.encode(), b"-m", b"accel.cli.main", b"generate", b"--backend",
                            b"numpy", b"--prompt", b"caf\xe9 \xff"], capture_output=True, timeout=300)
    err = child.stderr.decode("utf-8", "replace")
    assert child.returncode == 1 and "Traceback" not in err, err
    assert "--prompt is not valid UTF-8" in err and child.stdout == b""


def test_generate_over_nan_weights_prints_one_line(capsys, tmp_path):
    folder = tmp_path / "nan-model"
    shutil.copytree(accel.models.bundled_path(), folder)
    weights = st.load_safetensors(str(folder), backend="numpy")
    weights = {k: v.numpy() for k, v in weights.items()}
    weights["model.norm.weight"] = np.full_like(weights["model.norm.weight"], np.nan)
    st.save_safetensors(str(folder / "model.safetensors"), weights)
    fails_cleanly(capsys, ["generate", "--backend", "numpy", "--model", str(folder)],
                  "greedy decoding: the logits of row 0 are NaN")


def test_info_unknown_backend(capsys):
    fails_cleanly(capsys, ["info", "--backend", "nosuch"], "unknown backend 'nosuch'", "installed:")
    fails_cleanly(capsys, ["info", "--backend", "numpy:gpu"], "has no device 'gpu'")


def test_info_names_the_default_backend_and_why(capsys):
    assert main(["info", "--backend", "numpy"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("default backend:"))
    default = accel.current_backend().spec
    assert line.startswith(f"default backend: {default} (")
    assert "highest priority" in line or "ACCEL_BACKEND" in line


def test_export_to_an_unwritable_path(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails_cleanly(capsys, ["export", "--out", str(blocker / "model.onnx"), "--step", "decode"],
                  "cannot write", "is a file")
    fails_cleanly(capsys, ["export", "--out", str(tmp_path), "--step", "decode"], "is a directory")
    fails_cleanly(capsys, ["export", "--out", str(tmp_path / "m.onnx"), "--batch", "0", "--step", "decode"],
                  "--batch 0")
    assert not (tmp_path / "m.onnx").exists()


def test_npusim_fault_env_that_is_not_a_number():
    child = run_cli(["generate", "--backend", "npusim", "--max-new-tokens", "2"],
                    env={"ACCEL_NPUSIM_FAULT_AT": "abc"})
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "ACCEL_NPUSIM_FAULT_AT='abc' is not an integer" in child.stderr


@pytest.mark.parametrize("argv, words", [
    (["demo", "--max-new-tokens", "-1", "--backend", "numpy"], ["--max-new-tokens must be >= 1"]),
    (["demo", "--model", "/nonexistent-model", "--backend", "numpy"], ["no config.json at /nonexistent-model"]),
    (["bench", "--row-budget", "-1", "--quick", "--section", "ops", "--backend", "numpy"],
     ["--row-budget must be > 0"]),
    (["conformance", "--backend", "numpy", "--op", "nosuch"], ["unknown op 'nosuch'"]),
])
def test_other_subcommands_bad_values(capsys, argv, words):
    fails_cleanly(capsys, argv, *words)


def test_a_file_that_cannot_be_written_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails_cleanly(capsys, ["bench", "--out", str(blocker / "results"), "--quick", "--section", "ops",
                           "--backend", "numpy"], "cannot make the results folder")
    fails_cleanly(capsys, ["conformance", "--backend", "numpy", "--op", "add", "--json",
                           str(blocker / "x.json")], "Not a directory")
