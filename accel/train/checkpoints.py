"""Training checkpoints: a directory per save, written whole or not at all.

    OUT/checkpoint-000100/model.safetensors      float32 master weights (Hugging Face names)
                         optimizer.safetensors  AdamW moments ("m.<name>", "v.<name>")
                         trainer_state.json     step, seed, data position, configs, loss history
                         state.safetensors      other named training state, when there is any
                                                (FP8 amax histories, "fp8_amax_history.<layer>.<x|w|g>")
                         config.json, tokenizer.json (so the checkpoint is also a model directory)
    OUT/latest                                  name of the newest complete checkpoint

Every file goes into a temporary directory first, which is renamed into place once complete;
`latest` is replaced atomically after that. A crash leaves the previous checkpoint intact; a
crash between the rename and `latest` leaves a complete checkpoint that `find_checkpoint` finds
by itself (it scans for the newest complete one and treats `latest` as a hint only), and
leftover temporary directories are removed by `clean_partial` when the next run starts.
Non-finite weights or moments are never written (accel/train/health.py). The newest `keep`
checkpoints stay, so a diverged run can be rolled back to an earlier one.

The files are keyed by parameter name and hold the whole state whatever the number of ranks
that wrote them (ZeRO shards are gathered first), so a checkpoint resumes on any world size
and any backend. One rank writes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile

from accel.io import safetensors as st
from accel.io.files import give_default_mode
from accel.core.errors import ModelError
from accel.autodiff.optim import AdamState

LATEST = "latest"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
REQUIRED = ("model.safetensors", "optimizer.safetensors")
# Fault injection for tests: "mid-save:STEP" or "before-latest:STEP" SIGKILLs this process there.
CRASH_ENV = "ACCEL_TRAIN_CRASH"


STATE = "trainer_state.json"
EXTRA = "state.safetensors"  # named tensors of other training state (docs/fp8.md: amax histories)


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        give_default_mode(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _crash_point(point: str, step: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(out_dir: str, step: int, params: dict, opt_state: AdamState, state: dict,
                    files: dict[str, str] | None = None, keep: int = 3,
                    extra: tuple[dict, dict[str, str]] | None = None) -> str:
    """Write checkpoint `step` under out_dir; `files` maps names to text files to copy in
    (config.json, tokenizer.json); `extra` is (named tensors, string metadata) of other training
    state, written to state.safetensors. Keeps the newest `keep` checkpoints. Returns its path.
    Raises DivergenceError, writing nothing, if a weight or moment is NaN or infinite."""
    from accel.train.health import check_finite

    weights = {k: v.numpy() for k, v in params.items()}
    moments = {f"m.{k}": v.numpy() for k, v in opt_state.m.items()}
    moments.update({f"v.{k}": v.numpy() for k, v in opt_state.v.items()})
    check_finite(step, "weight", weights)
    check_finite(step, "optimizer moment", moments)
    os.makedirs(out_dir, exist_ok=True)
    name = f"checkpoint-{step:06d}"
    final = os.path.join(out_dir, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir)
    try:
        give_default_mode(tmp, directory=True)
        meta = {"step": str(step), "format": "accel-train-1"}
        st.save_safetensors(os.path.join(tmp, "model.safetensors"), weights, meta)
        _crash_point("mid-save", step)
        st.save_safetensors(os.path.join(tmp, "optimizer.safetensors"), moments,
                            {**meta, "optimizer_step": str(opt_state.step)})
        if extra is not None:
            st.save_safetensors(os.path.join(tmp, EXTRA), extra[0], {**meta, **extra[1]})
        for target, text in (files or {}).items():
            _atomic_write_text(os.path.join(tmp, target), text)
        _atomic_write_text(os.path.join(tmp, STATE), json.dumps({**state, "step": step}, indent=1))
        if os.path.isdir(final):  # a rerun over the same step: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _crash_point("before-latest", step)
    _atomic_write_text(os.path.join(out_dir, LATEST), name + "\n")
    for stale in complete_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(os.path.join(out_dir, stale), ignore_errors=True)
    return final


def complete_checkpoints(out_dir: str) -> list[str]:
    """Names of the complete checkpoint directories in out_dir, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    found = []
    for name in os.listdir(out_dir):
        match = CHECKPOINT.match(name)
        folder = os.path.join(out_dir, name)
        if match and all(os.path.isfile(os.path.join(folder, f)) for f in (*REQUIRED, STATE)):
            found.append((int(match.group(1)), name))
    return [name for _, name in sorted(found)]


def clean_partial(out_dir: str) -> list[str]:
    """Remove temporary directories and files a killed save left behind; returns their names."""
    if not os.path.isdir(out_dir):
        return []
    removed = []
    for name in os.listdir(out_dir):
        if name.startswith(".checkpoint-") or name.startswith(".tmp-"):
            target = os.path.join(out_dir, name)
            shutil.rmtree(target, ignore_errors=True) if os.path.isdir(target) else os.unlink(target)
            removed.append(name)
    return removed


def is_run_dir(path: str) -> bool:
    """Does `path` hold an earlier training run (checkpoints, a latest pointer, training.json)?"""
    return os.path.isdir(path) and any(
        CHECKPOINT.match(n) or n in (LATEST, "training.json") or n.startswith(".checkpoint-")
        for n in os.listdir(path))


def find_checkpoint(path: str) -> str:
    """A checkpoint directory, or a training output directory: its newest complete checkpoint,
    found by scanning (a missing or dangling `latest` pointer does not matter)."""
    if os.path.isfile(os.path.join(path, STATE)):
        return path
    names = complete_checkpoints(path)
    if names:
        return os.path.join(path, names[-1])
    raise ModelError(f"no complete training checkpoint in {path}",
                     hint="pass the --out directory of an earlier `accel train` run, or one of its "
                          "checkpoint-NNNNNN directories")


def read_state(folder: str) -> dict:
    """trainer_state.json, or a ModelError naming the damaged file and an older checkpoint."""
    path = os.path.join(folder, STATE)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
        for key in ("model_config", "train_config", "data", "history"):
            if not isinstance(state.get(key), dict):
                raise ValueError(f"no {key!r} section")
        return state
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        parent = os.path.dirname(os.path.abspath(folder))
        older = [n for n in complete_checkpoints(parent) if n != os.path.basename(os.path.abspath(folder))]
        raise ModelError(f"{path} is damaged: {str(exc).splitlines()[0]}",
                         hint=f"resume from an earlier checkpoint, e.g. --resume {os.path.join(parent, older[-1])}"
                         if older else "the run cannot be resumed from this checkpoint; start a new run") from None


def load_extra_state(path: str, backend=None) -> tuple[dict, dict[str, str]] | None:
    """(named tensors, metadata) of a checkpoint's state.safetensors, or None if it has none."""
    file = os.path.join(find_checkpoint(path), EXTRA)
    if not os.path.exists(file):
        return None
    return st.load_safetensors(file, backend), st.read_metadata(file)


def load_checkpoint(path: str, backend=None) -> tuple[dict, AdamState, dict]:
    """(params, optimizer state, trainer state) of a checkpoint, tensors on `backend`."""
    folder = find_checkpoint(path)
    state = read_state(folder)
    params = st.load_safetensors(os.path.join(folder, "model.safetensors"), backend)
    moments = st.load_safetensors(os.path.join(folder, "optimizer.safetensors"), backend)
    opt_step = int(st.read_metadata(os.path.join(folder, "optimizer.safetensors")).get("optimizer_step", state["step"]))
    m = {k[2:]: v for k, v in moments.items() if k.startswith("m.")}
    v = {k[2:]: t for k, t in moments.items() if k.startswith("v.")}
    if set(m) != set(params) or set(v) != set(params):
        raise ModelError(f"{folder}: optimizer state does not match the weights",
                         hint="the checkpoint is damaged; resume from an earlier one")
    return params, AdamState(opt_step, m, v), state
