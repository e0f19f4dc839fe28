"""Training checkpoints: a directory per save, written whole or not at all.

    OUT/checkpoint-000100/model.safetensors      float32 master weights (Hugging Face names)
                         optimizer.safetensors  AdamW moments ("m.<name>", "v.<name>")
                         trainer_state.json     step, seed, data position, configs, loss history
                         config.json, tokenizer.json (so the checkpoint is also a model directory)
    OUT/latest                                  name of the newest complete checkpoint

Every file goes into a temporary directory first, which is renamed into place once complete;
`latest` is replaced atomically after that. A crash leaves the previous checkpoint intact.
safetensors holds no code (no pickle), so a checkpoint loads on any backend.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from accel.io import safetensors as st
from accel.core.errors import ModelError
from accel.autodiff.optim import AdamState

LATEST = "latest"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
STATE = "trainer_state.json"


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; these are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(out_dir: str, step: int, params: dict, opt_state: AdamState, state: dict,
                    files: dict[str, str] | None = None, keep: int = 2) -> str:
    """Write checkpoint `step` under out_dir; `files` maps names to text files to copy in
    (config.json, tokenizer.json). Keeps the newest `keep` checkpoints. Returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    name = f"checkpoint-{step:06d}"
    final = os.path.join(out_dir, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        meta = {"step": str(step), "format": "accel-train-1"}
        st.save_safetensors(os.path.join(tmp, "model.safetensors"), params, meta)
        moments = {f"m.{k}": v for k, v in opt_state.m.items()}
        moments.update({f"v.{k}": v for k, v in opt_state.v.items()})
        st.save_safetensors(os.path.join(tmp, "optimizer.safetensors"), moments,
                            {**meta, "optimizer_step": str(opt_state.step)})
        for target, text in (files or {}).items():
            _atomic_write_text(os.path.join(tmp, target), text)
        _atomic_write_text(os.path.join(tmp, STATE), json.dumps({**state, "step": step}, indent=1))
        if os.path.isdir(final):  # a rerun over the same step: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(os.path.join(out_dir, LATEST), name + "\n")
    old = sorted(d for d in os.listdir(out_dir) if d.startswith("checkpoint-") and d != name
                 and os.path.isdir(os.path.join(out_dir, d)))
    for stale in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(os.path.join(out_dir, stale), ignore_errors=True)
    return final


def find_checkpoint(path: str) -> str:
    """A checkpoint directory, or a training output directory (its newest checkpoint)."""
    if os.path.isfile(os.path.join(path, STATE)):
        return path
    latest = os.path.join(path, LATEST)
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            found = os.path.join(path, f.read().strip())
        if os.path.isfile(os.path.join(found, STATE)):
            return found
    raise ModelError(f"no training checkpoint in {path}",
                     hint="pass the --out directory of an earlier `accel train` run, or one of its "
                          "checkpoint-NNNNNN directories")


def load_checkpoint(path: str, backend=None) -> tuple[dict, AdamState, dict]:
    """(params, optimizer state, trainer state) of a checkpoint, tensors on `backend`."""
    folder = find_checkpoint(path)
    with open(os.path.join(folder, STATE), encoding="utf-8") as f:
        state = json.load(f)
    params = st.load_safetensors(os.path.join(folder, "model.safetensors"), backend)
    moments = st.load_safetensors(os.path.join(folder, "optimizer.safetensors"), backend)
    opt_step = int(st.read_metadata(os.path.join(folder, "optimizer.safetensors")).get("optimizer_step", state["step"]))
    m = {k[2:]: v for k, v in moments.items() if k.startswith("m.")}
    v = {k[2:]: t for k, t in moments.items() if k.startswith("v.")}
    if set(m) != set(params) or set(v) != set(params):
        raise ModelError(f"{folder}: optimizer state does not match the weights",
                         hint="the checkpoint is damaged; resume from an earlier one")
    return params, AdamState(opt_step, m, v), state
