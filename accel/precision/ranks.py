"""FP8 training on several data-parallel ranks: the ranks agree on the policy and on float8
storage, the delayed-scaling amax histories are all-reduced after every step, and a resume at
another micro-batch rescales the gradient histories. `accel train` calls these (docs/fp8.md,
"Several ranks"); `comm` is accel.train.comm.Comm.
"""
from __future__ import annotations

import json

import numpy as np

import accel
from accel import ops

from .linear import Fp8Plan
from .recipes import PrecisionError


def rescale_gradient_amax(fp8: Fp8Plan, state: dict, tokens_per_micro_batch: int, say) -> None:
    """A micro-batch's loss is the mean over its tokens, so the output gradients its backward
    pass records scale as 1 / (micro-batch × sequence length). A run resumed with another
    micro-batch (another world size under the same global batch) scales the checkpoint's
    gradient amax histories by old / new tokens per micro-batch, so the resumed steps quantize
    gradients as if the histories had been recorded at the new split (a factor of 2 is exact);
    left as they are, the max over the history would saturate or waste range for up to
    history-length steps."""
    segments = state.get("history", {}).get("segments") or []
    before = segments[-1] if segments else None   # the launch that wrote the checkpoint
    old_seq = state.get("train_config", {}).get("seq_len")
    if not before or not before.get("micro_batch") or not old_seq:
        return
    old_tokens, new_tokens = before["micro_batch"] * old_seq, tokens_per_micro_batch
    if old_tokens == new_tokens:
        return
    factor = old_tokens / new_tokens
    for layer in fp8.state.layers.values():
        layer.histories["g"].values = ops.mul(layer.histories["g"].values, factor)
    say(f"accel: FP8 gradient amax histories scaled by {factor:g}: the checkpoint's micro-batch held "
        f"{old_tokens} tokens, this run's {new_tokens}")


def _same_float8_storage(fp8: Fp8Plan, comm, backend) -> None:
    """A rank whose backend stores no float8 runs the FP8 layers unquantized and keeps no amax
    histories (accel.precision.check_backend), so it would not call the all-reduce the others
    wait in: such a mixed fleet is refused on every rank, naming the ranks."""
    needed = {d for r in fp8.delayed_recipes().values() for d in (r.forward_dtype, r.grad_dtype)}
    mine = all(d in backend.dtypes for d in needed)
    every = comm.all_gather(accel.from_numpy(np.asarray([mine], np.int32), backend)).numpy().tolist()
    if all(every) or not any(every):
        return
    fleet = comm.fleet(backend.spec)
    without = ", ".join(f"{r} ({fleet[r]})" for r, has in enumerate(every) if not has)
    raise PrecisionError(f"FP8 delayed scaling on {len(every)} ranks: rank(s) {without} store no "
                         f"{'/'.join(sorted(d.name for d in needed))}, so they would run the FP8 layers "
                         "unquantized and keep no amax histories to all-reduce with the others",
                         hint="run every rank on a backend that lists float8 in `accel info`, or give the "
                              "policy's delayed-scaling layers another recipe or bfloat16")


def data_parallel_hook(fp8: Fp8Plan | None, fp8_record: dict | None, comm, backend, deterministic: bool, say):
    """The training loop's `after_step` for FP8 on several ranks: the amax histories all-reduced
    (max) after every step, so every rank quantizes with the same scales and the checkpoint
    (rank 0's) holds the whole job's amax (Transformer Engine reduces its amax over the
    data-parallel group the same way). None when there is nothing to reduce. Every rank must
    call it (it checks the ranks agree)."""
    # every rank must call the same collectives: the same policy, and float8 storage everywhere
    # or nowhere (a rank without it runs its FP8 layers unquantized and keeps no histories)
    comm.check_agreement("FP8 policy", json.dumps({k: (fp8_record or {}).get(k) for k in ("sha256", "recipes")},
                                                  sort_keys=True))
    if fp8 is None or not fp8.delayed_recipes():
        return None
    _same_float8_storage(fp8, comm, backend)
    if deterministic:
        say("accel: note: delayed-scaling FP8 records one amax per micro-batch, so with "
            "--deterministic-reduction the weights are reproducible at this world size but not bitwise "
            "the same at another (docs/fp8.md)")
    return fp8.state.all_reduce_amax
