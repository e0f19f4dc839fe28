"""Loaded weights have memory of their own: truncating or rewriting model.safetensors after
loading changes nothing (no SIGBUS, same tokens). Each case runs in a subprocess, so a SIGBUS
would show as the child's exit status instead of killing the test run."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import accel
import accel.models

_CHILD = r"""
import json, os, sys
import accel, accel.models
folder, backend, damage, mmap = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
model = accel.models.load_pretrained(folder, backend=backend, mmap=mmap)
prompt = model.tokenizer.encode("Once upon a time")
before = model.generate(prompt, 8, stop_at_eos=False)
path = os.path.join(folder, "model.safetensors")
size = os.path.getsize(path)
if damage == "truncate":
    os.truncate(path, 4096)
else:  # rewrite in place: same size, other bytes
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))
os.sync()
after = model.generate(prompt, 8, stop_at_eos=False)
print(json.dumps({"before": before, "after": after}))
"""


def run_child(folder, backend: str, damage: str, mmap: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, str(folder), backend, damage, "1" if mmap else "0"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(accel.models.bundled_path(), folder)
    return folder


@pytest.mark.parametrize("damage", ["truncate", "rewrite"])
def test_damaging_the_file_after_loading_changes_nothing(model_dir, backend, damage):
    child = run_child(model_dir, backend.spec, damage)
    assert child.returncode == 0, f"exit {child.returncode}:\n{child.stderr[-2000:]}"
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["after"] == result["before"] and len(result["before"]) == 8


def test_mmap_loading_is_the_documented_zero_copy_option(model_dir):
    # The same weights either way; the risk mmap=True carries (SIGBUS after truncation) is real.
    copied = accel.models.load_pretrained(str(model_dir), backend="numpy")
    mapped = accel.models.load_pretrained(str(model_dir), backend="numpy", mmap=True)
    for name, t in copied.params.items():
        np.testing.assert_array_equal(t.numpy(), mapped.params[name].numpy())
    del copied, mapped
    child = run_child(model_dir, "numpy", "truncate", mmap=True)
    assert child.returncode == -signal.SIGBUS, (child.returncode, child.stderr[-500:])
