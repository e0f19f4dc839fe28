"""The training loop, independent of any model: it takes `loss_fn(params, inputs, targets)`.

One step (accel/train/trainer.py): on each rank, for each of its micro-batches, value_and_grad
of the loss (in the compute dtype; master weights stay float32); the gradients averaged over the
global batch (all-reduced in buckets, or in a fixed order), clipped by global norm, and applied
by AdamW (replicated, or ZeRO-1 sharded) at the cosine-with-warmup learning rate. A loss spike
against the running average warns, skips the step or stops (`on_spike`). Rank 0 shows the one
progress bar, evaluates every `eval_every` steps and writes a checkpoint every `save_every` steps
and at the end (atomically, never with non-finite values).
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
from accel.autodiff.optim import AdamState, AdamW, cosine_schedule
from accel.core.errors import DeviceError, DTypeError, ModelError
from accel.train.batching import BatchPlan
from accel.train.comm import Comm
from accel.train.data import TokenData
from accel.train.errors import TrainConfigError
from accel.train.health import SPIKE_ACTIONS
from accel.train.trainer import Trainer


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
    global_batch_size: int = 0       # sequences per step over all ranks; 0: batch_size × grad_accum × ranks
    max_micro_batch: int = 0         # cap when the micro-batch is derived; 0: batch_size
    zero: int = 0                    # 1: ZeRO stage 1 (AdamW state sharded over ranks)
    bucket_mb: float = 25.0          # gradient all-reduce bucket size (MiB)
    deterministic_reduction: bool = False
    reduction_shards: int = 0        # fixed virtual micro-shards; 0: the global batch (one per sample)
    spike_factor: float = 3.0        # a loss above this × the running average is a spike; 0: off
    on_spike: str = "warn"           # warn | skip | stop
    keep_checkpoints: int = 3        # the newest N complete checkpoints are kept (rollback)

    def __post_init__(self) -> None:
        """Nonsense is refused here, naming the command-line flag, before anything runs."""
        at_least = {"steps": 1, "batch_size": 1, "seq_len": 1, "grad_accum": 1, "eval_batches": 1,
                    "warmup": 0, "save_every": 0, "eval_every": 0, "schedule_steps": 0, "seed": 0,
                    "global_batch_size": 0, "max_micro_batch": 0, "reduction_shards": 0,
                    "keep_checkpoints": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainConfigError(f"--{name.replace('_', '-')} {value} is invalid: it must be an "
                                       f"integer >= {low}", hint=f"pass --{name.replace('_', '-')} {max(low, 1)} or more")
        positive = {"lr": self.lr, "bucket_mb": self.bucket_mb, "beta1": self.beta1, "beta2": self.beta2,
                    "eps": self.eps}
        non_negative = {"grad_clip": self.grad_clip, "weight_decay": self.weight_decay,
                        "min_lr_ratio": self.min_lr_ratio, "spike_factor": self.spike_factor}
        for name, value in {**positive, **non_negative}.items():
            if not math.isfinite(value) or value < 0 or (name in positive and value == 0):
                need = "> 0" if name in positive else ">= 0 (0 turns it off)"
                raise TrainConfigError(f"--{name.replace('_', '-')} {value} is invalid: it must be a finite "
                                       f"number {need}", hint=f"e.g. --{name.replace('_', '-')} "
                                       f"{getattr(TrainConfig, name)}")
        if self.on_spike not in SPIKE_ACTIONS:
            raise TrainConfigError(f"--on-spike {self.on_spike!r} is not one of {', '.join(SPIKE_ACTIONS)}",
                                   hint="pass --on-spike warn, skip or stop")
        if self.zero not in (0, 1):
            raise TrainConfigError(f"--zero {self.zero} is not supported", hint="pass --zero 0 or --zero 1 "
                                   "(ZeRO stage 1: optimizer state sharded)")

    @property
    def total(self) -> int:
        return self.schedule_steps or self.steps

    def checkpoint_due(self, step: int) -> bool:
        """Is a checkpoint due once `step` steps are done? (Every `save_every` steps, and the last.)"""
        return step == self.steps or bool(self.save_every and step % self.save_every == 0)

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
    segments: list[dict] = field(default_factory=list)           # one per launch: steps, ranks, split
    spikes: list[str] = field(default_factory=list)
    spike_state: dict = field(default_factory=dict)              # the running average, for a resume
    optimizer_bytes: int = 0                                     # AdamW state held by one rank
    comm_seconds: float = 0.0                                    # rank 0's wait for reductions
    step_seconds: float = 0.0                                    # in train_step (no eval, no saves)
    step_cpu_seconds: float = 0.0                                # rank 0's CPU time in train_step
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


EVAL_ROWS = 8   # held-out windows per eval batch, whatever the training split


def evaluate(loss_fn: Callable, params: dict, data: TokenData, cfg: TrainConfig, backend) -> float:
    """Mean loss over `eval_batches` fixed held-out batches (the same samples in every run)."""
    total = 0.0
    for i in range(cfg.eval_batches):
        windows = data.windows("val", range(i * EVAL_ROWS, (i + 1) * EVAL_ROWS), cfg.seq_len, cfg.seed)
        x = accel.from_numpy(windows[:, :-1], backend)
        y = accel.from_numpy(windows[:, 1:], backend)
        total += float(loss_fn(params, x, y))
    return total / max(1, cfg.eval_batches)


def check_master_weights(params: dict, master: dt.DType) -> None:
    for name, p in params.items():
        if p.dtype is not master:
            raise ModelError(f"parameter {name!r} is {p.dtype.name}; training keeps {master.name} master weights",
                             hint=f"initialise or load the weights as {master.name}")


def train(loss_fn: Callable, params: dict, data: TokenData, cfg: TrainConfig, backend, *,
          opt_state: AdamState | None = None, start_step: int = 0, result: TrainResult | None = None,
          save: Callable[[int, dict, AdamState, TrainResult], str] | None = None,
          progress: bool = True, comm: Comm | None = None, plan: BatchPlan | None = None,
          resume_hint: str | None = None, log: Callable[[str], None] | None = None,
          after_step: Callable[[], None] | None = None,
          ) -> tuple[dict, AdamState, TrainResult]:
    """Run steps start_step .. cfg.steps-1 on this rank. `opt_state` is the whole optimizer
    state (as in a checkpoint). `save(step, params, opt_state, result)` writes a checkpoint; it
    is called on rank 0 only, with the whole state. Returns (params, whole opt state, result).

    `after_step()` is called once per optimizer step on every rank: after this rank's forward
    and backward passes of all its micro-batches, the gradient reduction and the update (also
    when --on-spike skip drops the update), and before rank 0 evaluates or saves and before the
    next step's forward. It is where state that `loss_fn` keeps per rank across steps is made
    the same on every rank; it may run collectives, since every rank reaches it in the same
    order (accel train passes the FP8 amax all-reduce, `DelayedScalingState.all_reduce_amax`,
    Transformer Engine's amax reduction over the data-parallel group)."""
    backend = accel.get_backend(backend)
    comm = comm or Comm()
    plan = plan or BatchPlan(cfg.batch_size * cfg.grad_accum, cfg.batch_size, cfg.grad_accum, 1)
    compute = dt.as_dtype(cfg.dtype)
    check_compute_dtype(backend, compute)
    data.check(cfg.seq_len)
    check_master_weights(params, master_dtype(compute))
    result = result or TrainResult()
    log = log or (lambda line: print(line, file=sys.stderr))
    trainer = Trainer(loss_fn, cfg, plan, data, backend, comm, after_step=after_step)
    trainer.spike.average = result.spike_state.get("average")
    trainer.spike.seen = result.spike_state.get("seen", 0)
    state = trainer.init_state(params, opt_state, start_step)
    result.optimizer_bytes = trainer.optimizer.state_bytes(state.opt)
    eval_loss = make_loss(loss_fn, compute)
    tokens_per_step = plan.global_batch * cfg.seq_len
    main = comm.is_main

    bar = None
    if progress and main:
        from tqdm import tqdm

        where = backend.spec if comm.world_size == 1 else f"{comm.world_size} ranks"
        bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {where}", unit="step",
                   file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    done = 0
    while state.step < cfg.steps:
        step = state.step
        try:
            step_started, cpu_started = time.perf_counter(), time.process_time()
            state, report = trainer.train_step(state)
            result.step_seconds += time.perf_counter() - step_started
            result.step_cpu_seconds += time.process_time() - cpu_started
        except DeviceError as exc:
            first = str(exc).splitlines()[0]
            raise DeviceError(f"device fault at step {step + 1} of {cfg.steps} on {backend.spec}: {first}",
                              hint=f"the newest checkpoint is kept; resume with: {resume_hint}"
                              if resume_hint else "resume from the newest checkpoint with --resume") from None
        if report.spike is not None:
            result.spikes.append(report.spike)
            if main:
                log(f"accel: warning: {report.spike}")
        result.losses.append(report.loss)
        result.spike_state = trainer.spike.to_dict()
        done += 1
        elapsed = time.perf_counter() - started
        last = state.step == cfg.steps
        if main and ((cfg.eval_every and state.step % cfg.eval_every == 0) or last):
            result.evals.append((state.step, evaluate(eval_loss, state.params, data, cfg, backend)))
        if bar is not None:
            post = {"loss": f"{report.loss:.3f}", "lr": f"{report.lr:.2e}",
                    "tok/s": f"{done * tokens_per_step / max(elapsed, 1e-9):,.0f}"}
            if result.evals:
                post["eval"] = f"{result.evals[-1][1]:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
        if save is not None and cfg.checkpoint_due(state.step):
            whole = trainer.full_opt_state(state)          # a collective under ZeRO
            check_finite_state(state.step, state.params, whole)
            if main:
                result.checkpoint = save(state.step, state.params, whole, result)
            comm.barrier()
    if bar is not None:
        bar.close()
    result.seconds += time.perf_counter() - started
    result.comm_seconds += trainer.comm_seconds
    result.tokens += done * tokens_per_step
    return state.params, trainer.full_opt_state(state), result


def check_finite_state(step: int, params: dict, opt_state: AdamState) -> None:
    """Every rank refuses the same way before rank 0 would write NaN/inf to disk."""
    from accel.train.health import check_finite

    check_finite(step, "weight", {k: v.numpy() for k, v in params.items()})
    check_finite(step, "optimizer moment", {f"m.{k}": v.numpy() for k, v in opt_state.m.items()})
    check_finite(step, "optimizer moment", {f"v.{k}": v.numpy() for k, v in opt_state.v.items()})
