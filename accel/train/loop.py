"""The training loop, independent of any model: it takes `loss_fn(params, inputs, targets)`.

One step: for each of `grad_accum` micro-batches, value_and_grad of the loss (in the compute
dtype; master weights stay float32), the gradients averaged, clipped by global norm, and
applied by AdamW at the cosine-with-warmup learning rate. Every `eval_every` steps the mean loss
over fixed held-out batches is measured; every `save_every` steps (and at the end) a checkpoint
is written atomically.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import accel
from accel.core import dtypes as dt
from accel import ops
from accel.autodiff.autograd import value_and_grad
from accel.core.errors import DTypeError, ModelError
from accel.autodiff.optim import AdamState, AdamW, add_grads, clip_by_global_norm, cosine_schedule, scale_grads
from accel.train.data import TokenData


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100                 # train until this many optimizer steps are done
    batch_size: int = 8
    seq_len: int = 64
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    schedule_steps: int = 0          # length of the cosine schedule; 0: `steps`
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0           # 0: no clipping
    eval_every: int = 50             # 0: only at the end
    eval_batches: int = 4
    save_every: int = 0              # 0: only at the end
    seed: int = 0
    dtype: str = "float32"           # compute dtype: float32, bfloat16 (mixed precision), float64

    @property
    def total(self) -> int:
        return self.schedule_steps or self.steps

    def lr_at(self, step: int) -> float:
        return cosine_schedule(step, base_lr=self.lr, warmup=self.warmup, total=self.total,
                               min_ratio=self.min_lr_ratio)

    def optimizer(self) -> AdamW:
        return AdamW(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                     weight_decay=self.weight_decay)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)            # one per step, in order
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    checkpoint: str | None = None
    seconds: float = 0.0
    tokens: int = 0


def master_dtype(compute: dt.DType) -> dt.DType:
    return dt.float64 if compute is dt.float64 else dt.float32


def check_compute_dtype(backend, compute: dt.DType) -> None:
    """Mixed precision only where the backend runs the dtype itself: never downcast silently."""
    if compute not in (dt.float32, dt.bfloat16, dt.float16, dt.float64):
        raise DTypeError(f"training dtype {compute.name} is not supported",
                         hint="use --dtype float32, bfloat16 (mixed precision) or float64")
    if compute not in backend.dtypes:
        raise DTypeError(f"{backend.spec} does not run {compute.name}",
                         hint=f"train in float32 on {backend.spec}, or pick a backend that lists "
                              f"{compute.name} in `accel info`")


def make_loss(loss_fn: Callable, compute: dt.DType) -> Callable:
    """loss(master_params, inputs, targets) in the compute dtype, returned as float32.

    The cast of each master weight is part of the differentiated function, so gradients come
    back in the master dtype (cast's VJP casts them back)."""
    if compute in (dt.float32, dt.float64):
        return loss_fn

    def mixed(params, inputs, targets):
        low = {k: ops.cast(v, compute) for k, v in params.items()}
        return ops.cast(loss_fn(low, inputs, targets), dt.float32)

    return mixed


def evaluate(loss_fn: Callable, params: dict, data: TokenData, cfg: TrainConfig, backend) -> float:
    total = 0.0
    for i in range(cfg.eval_batches):
        windows = data.batch("val", cfg.batch_size, cfg.seq_len, cfg.seed, i)
        x = accel.from_numpy(windows[:, :-1], backend)
        y = accel.from_numpy(windows[:, 1:], backend)
        total += float(loss_fn(params, x, y))
    return total / max(1, cfg.eval_batches)


def train(loss_fn: Callable, params: dict, data: TokenData, cfg: TrainConfig, backend, *,
          opt_state: AdamState | None = None, start_step: int = 0, result: TrainResult | None = None,
          save: Callable[[int, dict, AdamState, TrainResult], str] | None = None,
          progress: bool = True) -> tuple[dict, AdamState, TrainResult]:
    """Run steps start_step .. cfg.steps-1. `save(step, params, opt_state, result)` writes a
    checkpoint (the caller knows the model config and tokenizer); returns its path."""
    backend = accel.get_backend(backend)
    compute = dt.as_dtype(cfg.dtype)
    check_compute_dtype(backend, compute)
    data.check(cfg.seq_len)
    master = master_dtype(compute)
    for name, p in params.items():
        if p.dtype is not master:
            raise ModelError(f"parameter {name!r} is {p.dtype.name}; training keeps {master.name} master weights",
                             hint=f"initialise or load the weights as {master.name}")
    optimizer = cfg.optimizer()
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    result = result or TrainResult()
    step_loss = value_and_grad(make_loss(loss_fn, compute))
    eval_loss = make_loss(loss_fn, compute)
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {backend.spec}", unit="step",
                   file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    done = 0
    for step in range(start_step, cfg.steps):
        lr = cfg.lr_at(step)
        grads, loss_sum = None, 0.0
        for micro in range(cfg.grad_accum):
            windows = data.batch("train", cfg.batch_size, cfg.seq_len, cfg.seed, step, micro)
            x = accel.from_numpy(windows[:, :-1], backend)
            y = accel.from_numpy(windows[:, 1:], backend)
            loss, g = step_loss(params, x, y)
            loss_sum += float(loss)
            grads = add_grads(grads, g)
        if cfg.grad_accum > 1:
            grads = scale_grads(grads, 1.0 / cfg.grad_accum)
        if cfg.grad_clip > 0:
            grads, _ = clip_by_global_norm(grads, cfg.grad_clip)
        params, opt_state = optimizer.update(params, grads, opt_state, lr=lr)
        loss_value = loss_sum / cfg.grad_accum
        if not math.isfinite(loss_value):
            raise ModelError(f"training diverged at step {step}: loss is {loss_value}",
                             hint="lower --lr, raise --warmup, or train in float32")
        result.losses.append(loss_value)
        done += 1
        elapsed = time.perf_counter() - started
        last = step + 1 == cfg.steps
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
            result.evals.append((step + 1, evaluate(eval_loss, params, data, cfg, backend)))
        if bar is not None:
            post = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.2e}",
                    "tok/s": f"{done * tokens_per_step / max(elapsed, 1e-9):,.0f}"}
            if result.evals:
                post["eval"] = f"{result.evals[-1][1]:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
        if save is not None and ((cfg.save_every and (step + 1) % cfg.save_every == 0) or last):
            result.checkpoint = save(step + 1, params, opt_state, result)
    if bar is not None:
        bar.close()
    result.seconds += time.perf_counter() - started
    result.tokens += done * tokens_per_step
    return params, opt_state, result
