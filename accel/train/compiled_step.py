"""The whole training step as one compiled graph: forward, backward, gradient clipping, the
learning-rate schedule and the AdamW update.

`compile_train_step(loss_fn, config)` returns `step(params, opt_state, batch, step_idx) ->
(loss, params, opt_state)`. Everything that changes from step to step is a tensor input of the
graph: the step index enters as a 0-d tensor, and the schedule (linear warmup, cosine decay),
Adam's bias corrections and the decoupled weight decay are computed from it inside the graph, so
one trace serves every step (`step.compiled.stats.recompiles == 0`) and nothing runs per
parameter outside it. The backend's graph compiler lowers it (torch: generated code or inductor;
jax: one jax.jit; ONNX Runtime: one session); a backend without one interprets it.

The math is `accel.autodiff.optim`'s (AdamW.update, clip_by_global_norm, cosine_schedule) with
the Python floats replaced by tensors: the scalars are computed in float64 where the backend has
it and rounded once to the parameters' dtype, as the eager path rounds its Python floats, so a
compiled step equals the eager one to float32 accuracy (tests/training/test_compiled_step.py).
`eager_train_step` is that eager path with the same signature, for comparisons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import accel
from accel import ops
from accel.autodiff.optim import AdamState, AdamW, clip_by_global_norm, cosine_schedule
from accel.core import dtypes as dt
from accel.core.errors import OpError
from accel.core.tensor import Tensor


@dataclass(frozen=True)
class StepConfig:
    """What one optimizer step does besides the gradients: AdamW's hyper-parameters, clipping
    by global norm (0: none) and the schedule (cosine to `min_lr_ratio * lr` at `total_steps`
    after `warmup` linear steps; total_steps 0 and warmup 0: a constant lr)."""

    optimizer: AdamW = field(default_factory=AdamW)
    grad_clip: float = 0.0
    warmup: int = 0
    total_steps: int = 0
    min_lr_ratio: float = 0.1

    @classmethod
    def from_train_config(cls, cfg: Any) -> "StepConfig":
        """From `accel.train.loop.TrainConfig` (or anything with its lr/warmup/total/grad_clip)."""
        return cls(optimizer=cfg.optimizer(), grad_clip=float(cfg.grad_clip), warmup=int(cfg.warmup),
                   total_steps=int(cfg.total), min_lr_ratio=float(getattr(cfg, "min_lr_ratio", 0.1)))

    def lr_at(self, step: int) -> float:
        """The eager schedule (Python floats), what the compiled graph computes from a tensor."""
        if self.total_steps == 0 and self.warmup == 0:
            return self.optimizer.lr
        return cosine_schedule(step, base_lr=self.optimizer.lr, warmup=self.warmup,
                               total=self.total_steps or self.warmup, min_ratio=self.min_lr_ratio)


# --- the schedule and AdamW on tensors -----------------------------------------------------
def lr_tensor(config: StepConfig, step: Tensor) -> Tensor:
    """`cosine_schedule` with the step as a 0-d float tensor (no Python value per step)."""
    base = config.optimizer.lr
    if config.total_steps == 0 and config.warmup == 0:
        return ops.full((), base, step.dtype, step.backend)
    total = config.total_steps or config.warmup
    low = base * config.min_lr_ratio
    progress = ops.minimum(ops.div(ops.sub(step, float(config.warmup)), float(max(1, total - config.warmup))), 1.0)
    cosine = ops.add(ops.mul(ops.add(ops.cos(ops.mul(progress, math.pi)), 1.0), 0.5 * (base - low)), low)
    if config.warmup <= 0:
        return cosine
    warm = ops.mul(ops.add(step, 1.0), base / config.warmup)
    return ops.where(ops.lt(step, float(config.warmup)), warm, cosine)


def adamw_update(opt: AdamW, params: dict[str, Tensor], grads: dict[str, Tensor], m: dict, v: dict,
                 count: Tensor, lr: Tensor) -> tuple[dict, dict, dict]:
    """AdamW.update with the update count so far (AdamState.step) and lr as tensors: (params, m, v).

    The scalars are computed in the step tensor's dtype (float64 where the backend has it) and
    rounded once to the parameters' dtype, as the eager path rounds its Python floats."""
    t = ops.add(count, 1.0)
    step_size = ops.div(lr, ops.sub(1.0, ops.pow(ops.full((), opt.beta1, t.dtype, t.backend), t)))
    bias2_sqrt = ops.sqrt(ops.sub(1.0, ops.pow(ops.full((), opt.beta2, t.dtype, t.backend), t)))
    decay = ops.sub(1.0, ops.mul(lr, opt.weight_decay))
    dtypes = {p.dtype for p in params.values()}
    if len(dtypes) != 1:
        raise OpError(f"compiled AdamW step: parameters of several dtypes ({', '.join(sorted(d.name for d in dtypes))})",
                      hint="keep master weights in one dtype (accel train keeps float32 masters)")
    (dtype,) = dtypes
    scalars = [x if x.dtype is dtype else ops.cast(x, dtype) for x in (step_size, bias2_sqrt, decay)]
    return opt.apply(params, grads, m, v, step_size=scalars[0], bias2_sqrt=scalars[1], decay=scalars[2])


# --- the step --------------------------------------------------------------------------------
class CompiledTrainStep:
    """`step(params, opt_state, batch, step_idx) -> (loss, params, opt_state)` as one graph.

    `batch` is a tuple of tensors passed to `loss_fn(params, *batch)`; `step_idx` is the 0-based
    step number (the schedule's position); Adam's bias corrections count `opt_state.step`, as
    `AdamW.update` does.
    `self.compiled` is the `accel.compile` function (its `.stats` count traces)."""

    def __init__(self, loss_fn: Callable, config: StepConfig, backend=None):
        self.loss_fn = loss_fn
        self.config = config
        self.compiled = accel.compile(self._graph, backend=backend, name="train_step")

    def _graph(self, params, m, v, batch, step, count):
        loss, grads = accel.value_and_grad(self.loss_fn)(params, *batch)
        if self.config.grad_clip > 0:
            grads, _ = clip_by_global_norm(grads, self.config.grad_clip)
        lr = lr_tensor(self.config, step)
        new_p, new_m, new_v = adamw_update(self.config.optimizer, params, grads, m, v, count, lr)
        return loss, new_p, new_m, new_v

    def __call__(self, params: dict[str, Tensor], opt_state: AdamState, batch: tuple, step_idx: int):
        backend = next(iter(params.values())).backend
        kind = _scalar_dtype(backend)
        step = accel.tensor(float(step_idx), dtype=kind, backend=backend)
        count = accel.tensor(float(opt_state.step), dtype=kind, backend=backend)
        loss, new_p, new_m, new_v = self.compiled(params, opt_state.m, opt_state.v, tuple(batch), step, count)
        return loss, new_p, AdamState(opt_state.step + 1, new_m, new_v)


def compile_train_step(loss_fn: Callable, config: StepConfig | AdamW | None = None, *,
                       backend=None) -> CompiledTrainStep:
    """One graph per batch shape for forward + backward + clipping + schedule + AdamW."""
    if config is None:
        config = StepConfig()
    elif isinstance(config, AdamW):
        config = StepConfig(optimizer=config)
    return CompiledTrainStep(loss_fn, config, backend)


def eager_train_step(loss_fn: Callable, config: StepConfig) -> Callable:
    """The same step op by op (the reference the compiled step is tested against)."""
    grads_of = accel.value_and_grad(loss_fn)

    def step(params, opt_state: AdamState, batch: tuple, step_idx: int):
        loss, grads = grads_of(params, *batch)
        if config.grad_clip > 0:
            grads, _ = clip_by_global_norm(grads, config.grad_clip)
        new_p, state = config.optimizer.update(params, grads, opt_state, lr=config.lr_at(step_idx))
        return loss, new_p, state
    return step


def _scalar_dtype(backend):
    """float64 for the schedule's scalars where the backend has it (the eager path's Python
    floats are float64), else float32."""
    return dt.float64 if dt.float64 in backend.dtypes else dt.float32


__all__ = ["StepConfig", "CompiledTrainStep", "compile_train_step", "eager_train_step", "lr_tensor",
           "adamw_update"]
