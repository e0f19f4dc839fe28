"""Optimisation in accel ops, so it runs on every backend: AdamW, global-norm clipping, the
cosine schedule with linear warmup, and helpers for gradient accumulation.

Functional like the rest of training (`accel.value_and_grad`): parameters, gradients and
optimizer state are dicts of tensors keyed by parameter name, and `update` returns new ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from accel.core import dtypes as dt
from accel import ops
from accel.core.errors import OpError
from accel.core.tensor import Tensor


@dataclass(frozen=True)
class AdamState:
    """Step count and the two moment estimates (same dtype as the master weights)."""

    step: int
    m: dict[str, Tensor] = field(repr=False)
    v: dict[str, Tensor] = field(repr=False)


@dataclass(frozen=True)
class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`.

    p <- p * (1 - lr * weight_decay)                       (decayed parameters only)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g²
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    `decay_matrices_only` (the nanoGPT convention) leaves norms, biases and other 1-d
    parameters undecayed; set it False to decay everything, as torch does by default.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    decay_matrices_only: bool = True

    def init(self, params: dict[str, Tensor]) -> AdamState:
        return AdamState(0, {k: ops.zeros_like(p) for k, p in params.items()},
                         {k: ops.zeros_like(p) for k, p in params.items()})

    def decays(self, param: Tensor) -> bool:
        return self.weight_decay != 0.0 and (param.ndim >= 2 or not self.decay_matrices_only)

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], state: AdamState,
               lr: float | None = None) -> tuple[dict[str, Tensor], AdamState]:
        lr = self.lr if lr is None else float(lr)
        t = state.step + 1
        step_size = lr / (1.0 - self.beta1 ** t)
        bias2_sqrt = math.sqrt(1.0 - self.beta2 ** t)
        new_params, new_m, new_v = self.apply(params, grads, state.m, state.v, step_size=step_size,
                                              bias2_sqrt=bias2_sqrt, decay=1.0 - lr * self.weight_decay)
        return new_params, AdamState(t, new_m, new_v)

    def apply(self, params: dict[str, Tensor], grads: dict[str, Tensor], m: dict[str, Tensor],
              v: dict[str, Tensor], *, step_size, bias2_sqrt, decay) -> tuple[dict, dict, dict]:
        """The per-parameter update given this step's scalars (Python floats, or 0-d tensors of
        the parameters' dtype when the step count lives in a compiled graph): (params, m, v)."""
        b1, b2 = self.beta1, self.beta2
        new_params, new_m, new_v = {}, {}, {}
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                raise OpError(f"AdamW.update: no gradient for parameter {name!r} {list(p.shape)}",
                              hint="pass a gradient for every parameter (zeros if it is frozen)")
            if g.dtype is not p.dtype:
                g = ops.cast(g, p.dtype)
            mm = ops.add(ops.mul(m[name], b1), ops.mul(g, 1.0 - b1))
            vv = ops.add(ops.mul(v[name], b2), ops.mul(ops.mul(g, g), 1.0 - b2))
            denom = ops.add(ops.div(ops.sqrt(vv), bias2_sqrt), self.eps)
            if self.decays(p):
                p = ops.mul(p, decay)
            new_params[name] = ops.sub(p, ops.mul(ops.div(mm, denom), step_size))
            new_m[name], new_v[name] = mm, vv
        return new_params, new_m, new_v


def global_norm(grads: dict[str, Tensor]) -> Tensor:
    """sqrt(sum of every gradient element squared), in float32 (float64 if the grads are)."""
    total = None
    for g in grads.values():
        gf = ops.cast(g, dt.float32) if g.dtype in dt.LOW_PRECISION else g
        part = ops.sum(ops.mul(gf, gf))
        total = part if total is None else ops.add(total, ops.cast(part, total.dtype))
    if total is None:
        raise OpError("global_norm of no gradients", hint="pass a non-empty dict of gradients")
    return ops.sqrt(total)


def clip_by_global_norm(grads: dict[str, Tensor], max_norm: float) -> tuple[dict[str, Tensor], Tensor]:
    """Scale all gradients by min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_.

    Returns the clipped gradients and the norm before clipping. The scale stays on the device
    (no host sync), so clipping costs no round trip.
    """
    norm = global_norm(grads)
    scale = ops.minimum(ops.div(float(max_norm), ops.add(norm, 1e-6)), 1.0)
    clipped = {}
    for name, g in grads.items():
        s = scale if scale.dtype is g.dtype else ops.cast(scale, g.dtype)
        clipped[name] = ops.mul(g, s)
    return clipped, norm


def cosine_schedule(step: int, *, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Learning rate at `step` (0-based): linear warmup to base_lr over `warmup` steps, then a
    cosine decay to min_ratio * base_lr at step `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    low = base_lr * min_ratio
    return low + 0.5 * (base_lr - low) * (1.0 + math.cos(math.pi * progress))


def add_grads(total: dict[str, Tensor] | None, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gradient accumulation: the running sum of micro-batch gradients."""
    if total is None:
        return dict(grads)
    return {k: ops.add(total[k], g) for k, g in grads.items()}


def scale_grads(grads: dict[str, Tensor], factor: float) -> dict[str, Tensor]:
    return {k: ops.mul(g, factor) for k, g in grads.items()}
