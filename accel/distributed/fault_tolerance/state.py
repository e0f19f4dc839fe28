"""What a replica is, as the state that healing copies from a live peer and the spare-device
retry restores from memory: parameters, AdamW moments and step, the committed step, the data
cursor and the sample RNG's key.

The data RNG is counter-based (accel/train/data.py: a sample is keyed by seed and its global
id), so "RNG state" is the seed plus the cursor; there is no hidden generator state to carry.
Tensors travel as torch tensors over torchft's PGTransport: raw bytes over the process group,
only the shapes and dtypes are pickled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import accel
from accel.autodiff.optim import AdamState
from accel.core.errors import AccelError
from accel.core.tensor import Tensor


class HealError(AccelError):
    """A state received from a peer does not fit this replica (other model, other data seed)."""


@dataclass
class ReplicaState:
    """The mutable training state of one replica (the driver replaces it after each commit)."""

    params: dict[str, Tensor]
    opt: AdamState
    step: int                    # committed optimizer steps
    samples: int                 # data cursor: the global sample id the next step starts from
    seed: int

    def snapshot(self) -> dict:
        """Host copies of everything (numpy), for moving to another device or another process."""
        return {"params": {k: accel.asnumpy(v) for k, v in self.params.items()},
                "m": {k: accel.asnumpy(v) for k, v in self.opt.m.items()},
                "v": {k: accel.asnumpy(v) for k, v in self.opt.v.items()},
                "adam_step": self.opt.step, "step": self.step, "samples": self.samples, "seed": self.seed}

    @classmethod
    def from_snapshot(cls, snap: dict, backend) -> "ReplicaState":
        put = lambda d: {k: accel.from_numpy(np.asarray(v), backend) for k, v in d.items()}
        return cls(put(snap["params"]), AdamState(int(snap["adam_step"]), put(snap["m"]), put(snap["v"])),
                   int(snap["step"]), int(snap["samples"]), int(snap["seed"]))


def to_wire(state: ReplicaState) -> dict:
    """The snapshot with torch tensors at the leaves (what torchft's transports move)."""
    import torch

    snap = state.snapshot()
    tensors = lambda d: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in d.items()}
    return {"params": tensors(snap["params"]), "m": tensors(snap["m"]), "v": tensors(snap["v"]),
            "counters": torch.tensor([snap["adam_step"], snap["step"], snap["samples"], snap["seed"]],
                                     dtype=torch.int64)}


def from_wire(wire: dict, like: ReplicaState, backend) -> ReplicaState:
    """A peer's state, checked against this replica's own (same parameter names, shapes, seed)."""
    adam_step, step, samples, seed = (int(x) for x in wire["counters"].tolist())
    if seed != like.seed:
        raise HealError(f"the peer trains with data seed {seed}, this replica with {like.seed}",
                        hint="start every replica with the same --seed")
    theirs = {k: tuple(v.shape) for k, v in wire["params"].items()}
    ours = {k: tuple(v.shape) for k, v in like.params.items()}
    if theirs != ours:
        diff = sorted(set(theirs.items()) ^ set(ours.items()))[:3]
        raise HealError(f"the peer's parameters differ from this replica's (first differences: {diff})",
                        hint="start every replica with the same --model-config")
    host = lambda d: {k: t.numpy() for k, t in d.items()}
    return ReplicaState.from_snapshot({"params": host(wire["params"]), "m": host(wire["m"]),
                                       "v": host(wire["v"]), "adam_step": adam_step, "step": step,
                                       "samples": samples, "seed": seed}, backend)
