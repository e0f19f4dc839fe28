"""One optimizer step on any number of ranks, factored so other drivers (the torchft fault-
tolerant loop, a compiled step) can reuse the pieces:

    trainer = Trainer(loss_fn, cfg, plan, data, backend, comm)
    state = trainer.init_state(params)                       # or from a checkpoint
    state, report = trainer.train_step(state)                # local grads → reduce → update

`local_grads` computes this rank's micro-batch gradients into the reducer, `reducer.finish`
gives the global mean gradient, `optimizer.step` clips and applies AdamW (replicated or ZeRO-1),
then `after_step` (if given) makes per-rank state the model kept during the step the same on
every rank (accel/train/loop.py `train` says when it runs).
`TrainState` is plain data: parameters and optimizer moments as named tensors, the step and the
data cursor (samples consumed).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

import accel
from accel.autodiff.autograd import value_and_grad
from accel.autodiff.optim import AdamState
from accel.core import dtypes as dt
from accel.core.tensor import Tensor
from accel.train.batching import BatchPlan
from accel.train.comm import Comm
from accel.train.data import TokenData
from accel.train.health import SpikeGuard
from accel.train.optimizers import Replicated, ZeroSharded
from accel.train.reducers import BucketedMean, FixedOrderSum, GradBuckets, LocalMean


@dataclass(frozen=True)
class TrainState:
    params: dict[str, Tensor]
    opt: AdamState            # this rank's part under ZeRO-1, else the whole state
    step: int                 # optimizer steps done
    consumed: int             # samples consumed: the data cursor and the schedule's clock


@dataclass(frozen=True)
class StepReport:
    step: int                 # the step just taken (0-based)
    loss: float               # mean loss over the global batch
    lr: float
    grad_norm: float | None   # before clipping
    spike: str | None         # a loss-spike message, if any
    skipped: bool             # the update was skipped (--on-spike skip)


class Trainer:
    def __init__(self, loss_fn, cfg, plan: BatchPlan, data: TokenData, backend, comm: Comm | None = None,
                 *, make_loss=None, after_step: Callable[[], None] | None = None) -> None:
        from accel.train.loop import make_loss as default_make_loss

        self.cfg, self.plan, self.data, self.backend = cfg, plan, data, accel.get_backend(backend)
        self.comm = comm or Comm()
        self.compute = dt.as_dtype(cfg.dtype)
        self.loss = (make_loss or default_make_loss)(loss_fn, self.compute)
        self.step_loss = value_and_grad(self.loss)
        self.grad_buckets: GradBuckets | None = None   # the bucket plan (data parallel, replicated)
        self.buckets_learned = False
        self.spike = SpikeGuard(cfg.spike_factor, cfg.on_spike)
        self.sample_log = os.environ.get("ACCEL_TRAIN_SAMPLE_LOG")
        # ACCEL_TRAIN_OVERLAP=0: buckets launched after the backward (the before/after figure
        # of benchmarks/overlap_buckets.py); the reduced values are the same either way
        self.overlap = os.environ.get("ACCEL_TRAIN_OVERLAP", "1") != "0"
        self.after_step = after_step
        self.optimizer = None
        self.comm_seconds = 0.0   # waiting for the gradient reduction, the loss and after_step (not ZeRO's)

    # --- state ----------------------------------------------------------------------------
    def init_state(self, params: dict[str, Tensor], opt_state: AdamState | None = None,
                   step: int = 0, consumed: int | None = None) -> TrainState:
        """Every rank starts from rank 0's weights; `opt_state` is the whole (gathered) state."""
        if self.comm.world_size > 1:
            params = {k: self.comm.broadcast(v, src=0) for k, v in params.items()}
        if self.overlaps():
            self.grad_buckets = GradBuckets.reverse_of(params, self.bucket_bytes)
            self.buckets_learned = False
        opt = self.cfg.optimizer()
        self.optimizer = ZeroSharded(opt, self.comm, params) if self.cfg.zero else Replicated(opt, self.comm)
        state = self.optimizer.init(params) if opt_state is None else self.optimizer.from_full(opt_state, params)
        return TrainState(params, state, step, step * self.plan.global_batch if consumed is None else consumed)

    def full_opt_state(self, state: TrainState) -> AdamState:
        """The optimizer state keyed by parameter name (gathers ZeRO shards: all ranks call it)."""
        return self.optimizer.full_state(state.opt)

    @property
    def bucket_bytes(self) -> int:
        return int(self.cfg.bucket_mb * 2 ** 20)

    def overlaps(self) -> bool:
        """Buckets all-reduced during the backward: replicated data parallel. ZeRO-1 reduce-
        scatters in its optimizer, --deterministic-reduction all-gathers after the step."""
        return self.comm.world_size > 1 and not self.cfg.zero and not self.plan.shards

    def reducer(self):
        if self.plan.shards:
            return FixedOrderSum(self.plan.shards, self.comm)
        if not self.overlaps():
            return LocalMean(self.plan.grad_accum)
        return BucketedMean(self.plan.grad_accum, self.comm, self.grad_buckets)

    def relearn_buckets(self, params: dict[str, Tensor], ready_order: list[str]) -> None:
        """After the first step, plan the buckets in the order the backward finished the
        gradients (DDP rebuilds its buckets the same way), rank 0's order on every rank so the
        collectives still line up."""
        names = list(params)
        seen = set(ready_order)
        ready_order = [n for n in ready_order if n in params] + [n for n in reversed(names) if n not in seen]
        index = {n: i for i, n in enumerate(names)}
        mine = accel.from_numpy(np.asarray([index[n] for n in ready_order], np.int64), self.backend)
        order = [names[int(i)] for i in self.comm.broadcast(mine, src=0).numpy()]
        self.grad_buckets = GradBuckets.plan(params, order, self.bucket_bytes)
        self.buckets_learned = True

    # --- one step -------------------------------------------------------------------------
    def lr_at(self, consumed: int) -> float:
        """The schedule runs on consumed samples (in units of the global batch)."""
        return self.cfg.lr_at(consumed // self.plan.global_batch)

    def local_grads(self, params: dict[str, Tensor], step: int, reducer) -> list[float]:
        """This rank's micro-batches of `step`: gradients into `reducer`, losses returned."""
        losses = []
        for micro in range(self.plan.grad_accum):
            ids = self.plan.sample_ids(step, self.comm.rank, micro)
            if self.sample_log:
                with open(f"{self.sample_log}.{self.comm.rank}", "a", encoding="utf-8") as f:
                    f.write(" ".join(map(str, ids)) + "\n")
            windows = self.data.windows("train", ids, self.cfg.seq_len, self.cfg.seed)
            x = accel.from_numpy(windows[:, :-1], self.backend)
            y = accel.from_numpy(windows[:, 1:], self.backend)
            last = micro == self.plan.grad_accum - 1 and self.overlap
            hook = getattr(reducer, "on_grad_ready", None) if last else None
            if hook is None:
                loss, grads = self.step_loss(params, x, y)
                reducer.add(grads)
            else:   # the last micro-batch: buckets start while its backward runs
                loss, _ = value_and_grad(self.loss, on_grad_ready=hook)(params, x, y)
            losses.append(float(loss))
        return losses

    def global_loss(self, losses: list[float]) -> float:
        """Mean over every micro-batch of every rank, summed exactly (fsum), so the figure does
        not depend on how the batch was split."""
        mine = accel.from_numpy(np.asarray(losses, np.float32), self.backend)
        every = self.comm.all_gather(mine).numpy().astype(np.float64)
        return math.fsum(every.tolist()) / every.size

    def train_step(self, state: TrainState) -> tuple[TrainState, StepReport]:
        step = state.step
        reducer = self.reducer()
        losses = self.local_grads(state.params, step, reducer)
        started = time.perf_counter()
        grads = reducer.finish()
        loss = self.global_loss(losses)          # while the gradient buckets are in flight
        if not isinstance(grads, dict):
            grads = grads.wait()
        self.comm_seconds += time.perf_counter() - started
        if isinstance(reducer, BucketedMean) and not self.buckets_learned:
            self.relearn_buckets(state.params, reducer.ready_order)
        lr = self.lr_at(state.consumed)
        spike = self.spike.check(step + 1, loss)     # steps are counted from 1 in messages
        after = replace(state, step=step + 1, consumed=state.consumed + self.plan.global_batch)
        if spike is not None and self.cfg.on_spike == "skip":
            self.end_step()   # the skipped step's forward and backward passes ran all the same
            return after, StepReport(step, loss, lr, None, spike, True)
        params, opt, norm = self.optimizer.step(state.params, grads, state.opt, lr=lr, clip=self.cfg.grad_clip,
                                                reduced=bool(self.plan.shards) or not self.cfg.zero)
        self.end_step()
        return (replace(after, params=params, opt=opt),
                StepReport(step, loss, lr, None if norm is None else float(norm), spike, False))

    def end_step(self) -> None:
        """Run `after_step` (it may hold collectives: every rank reaches it once per step)."""
        if self.after_step is not None:
            started = time.perf_counter()
            self.after_step()
            self.comm_seconds += time.perf_counter() - started
