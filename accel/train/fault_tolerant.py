"""Fault-tolerant data-parallel training on torchft: every optimizer step is a transaction.

One process is one replica group. Each step:

1. `manager.start_quorum()` — torchft's lighthouse says who takes part; a replica that is behind
   (just restarted) receives parameters, AdamW state, step and data cursor from a live peer here.
2. The participants split the step's global batch (samples `step·G .. step·G+G-1`, keyed by
   global id, accel/train/data.py) and each computes the gradient of its share, weighted by its
   share of the batch, accumulated in float64.
3. One all-reduce (sum) through the manager over gloo: the weighted gradients and losses.
4. `manager.should_commit()` — if any participant failed (died, hung past the timeout, raised a
   DeviceError it could not recover from), the step is discarded and redone with the next quorum;
   otherwise the optimizer applies the global-batch gradient and the step and cursor advance.
5. Every `save_every` committed steps and at the end, participant 0 of the committing quorum
   (torchft orders participants by replica id, so every replica agrees who that is) writes the
   same world-size-independent checkpoint as the normal loop (accel/train/checkpoints.py): only
   committed state reaches disk, and `--resume` starts every replica from it after the whole job
   was lost.

Each participant's partial sum is rounded to float32 values and the all-reduce adds them in
float64, where a sum of a few float32 values is exact: the result does not depend on the order
gloo adds them in, or on which replica holds which share. So a run is reproduced exactly by a
one-process run that splits each step among the same number of participants (`replay`); with a
different participation the losses differ by float32 rounding only.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import accel
from accel.autodiff.autograd import value_and_grad
from accel.autodiff.optim import clip_by_global_norm
from accel.core import dtypes as dt
from accel.distributed.fault_tolerance.config import FaultToleranceConfig
from accel.distributed.fault_tolerance.events import EventLog, ft_dir
from accel.distributed.fault_tolerance.pause import maybe_pause
from accel.distributed.fault_tolerance.spare import DeviceFailover
from accel.distributed.fault_tolerance.state import ReplicaState, from_wire, to_wire
from accel.train.errors import DivergenceError, TrainConfigError
from accel.train.flat import FlatLayout
from accel.train.loop import TrainConfig, check_compute_dtype, make_loss, master_dtype


@dataclass(frozen=True)
class StepPlan:
    """Which global sample ids each participant trains at a step."""

    global_batch: int
    micro_batch: int
    replicas: int            # replicas the job was started with
    policy: str              # constant | shrink

    def __post_init__(self) -> None:
        if self.policy == "shrink" and self.global_batch % self.replicas:
            raise TrainConfigError(f"--ft-batch-policy shrink needs the global batch {self.global_batch} "
                                   f"to divide among the {self.replicas} replicas",
                                   hint="pick a global batch that is a multiple of the replica count")

    def batch_at(self, participants: int) -> int:
        """Samples in a step with this many participants."""
        if self.policy == "constant":
            return self.global_batch
        return self.global_batch // self.replicas * min(participants, self.replicas)

    def samples(self, step: int, participants: int, rank: int) -> range:
        """Global ids of participant `rank`'s share (contiguous); the step's ids start at step·G."""
        total = self.batch_at(participants)
        base, extra = divmod(total, participants)
        start = rank * base + min(rank, extra)
        return range(step * self.global_batch + start,
                     step * self.global_batch + start + base + (rank < extra))


@dataclass
class History:
    """The job's committed losses and participant counts, one per step from step 0: a healed
    replica receives them with the state, a checkpoint keeps them, so whichever replica writes
    the next checkpoint or training.json has the whole run's record."""

    losses: list[float] = field(default_factory=list)
    participants: list[int] = field(default_factory=list)

    def to_wire(self) -> dict:
        import torch

        # the length leads, so an empty history is still a non-empty tensor on the wire
        return {"history_losses": torch.tensor([float(len(self.losses)), *self.losses], dtype=torch.float64),
                "history_participants": torch.tensor([len(self.participants), *self.participants],
                                                     dtype=torch.int64)}

    @classmethod
    def from_wire(cls, wire: dict) -> "History":
        losses, participants = wire["history_losses"].tolist(), wire["history_participants"].tolist()
        return cls([float(x) for x in losses[1:]], [int(x) for x in participants[1:]])


@dataclass
class FTResult:
    losses: list[float] = field(default_factory=list)       # global loss of each committed step
    participants: list[int] = field(default_factory=list)   # replicas that took part, per step
    steps_redone: int = 0
    seconds: float = 0.0
    committed_seconds: float = 0.0                          # time in steps that committed
    state: ReplicaState | None = None
    history: History = field(default_factory=History)   # the job's, steps 0.. (not only this replica's)
    checkpoints: list[str] = field(default_factory=list)  # written by this replica


def local_gradient(loss_and_grad, state: ReplicaState, data, ids: range, plan: StepPlan, participants: int,
                   cfg: TrainConfig, layout: FlatLayout, backend) -> np.ndarray:
    """This participant's gradient and loss as one float64 vector [grads..., loss], each micro-batch
    weighted by its share of the step's batch, so the all-reduced sum is the global-batch mean."""
    total = plan.batch_at(participants)
    out = np.zeros(layout.size + 1, dtype=np.float64)
    ids = list(ids)
    for at in range(0, len(ids), plan.micro_batch):
        chunk = ids[at:at + plan.micro_batch]
        windows = data.windows("train", chunk, cfg.seq_len, cfg.seed)
        x = accel.from_numpy(windows[:, :-1], backend)
        y = accel.from_numpy(windows[:, 1:], backend)
        loss, grads = loss_and_grad(state.params, x, y)
        weight = len(chunk) / total
        out[:-1] += accel.asnumpy(layout.flatten(grads)).astype(np.float64) * weight
        out[-1] += float(loss) * weight
    # rounded to float32 values, so that adding 2..N of them in float64 is exact (24-bit mantissas,
    # 29 bits of headroom) and gloo's ring order cannot change the sum
    return out.astype(np.float32).astype(np.float64)


def apply_update(optimizer, state: ReplicaState, reduced: np.ndarray, layout: FlatLayout, cfg: TrainConfig,
                 backend, master: dt.DType, plan: StepPlan, step: int) -> ReplicaState:
    flat = accel.from_numpy(reduced[:-1].astype(master.numpy), backend)
    grads = layout.unflatten(flat)
    if cfg.grad_clip > 0:
        grads, _ = clip_by_global_norm(grads, cfg.grad_clip)
    params, opt = optimizer.update(state.params, grads, state.opt, lr=cfg.lr_at(step))
    return ReplicaState(params, opt, step + 1, (step + 1) * plan.global_batch, state.seed)


def _cause(error) -> str:
    """The first line of what failed a step (torchft wraps it with its traceback)."""
    return str(getattr(error, "original_exception", error) or "a peer failed").splitlines()[0][:300]


def _marker(out: str, name: str) -> str:
    return os.path.join(ft_dir(out), name)


def wait_for_peers(out: str, replica: str, replicas: int, timeout_s: float) -> None:
    """First start only: wait (up to the quorum timeout) until every replica of the job has
    started, so the first quorum has them all rather than whoever imported fastest. On one
    machine through marker files in <out>/ft; across machines the lighthouse's join timeout does
    this job."""
    open(_marker(out, f"ready-{replica}"), "w").close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(n.startswith("ready-") for n in os.listdir(ft_dir(out))) >= replicas:
            return
        time.sleep(0.05)


def job_finished(out: str) -> bool:
    return os.path.exists(_marker(out, "finished"))


def mark_finished(out: str) -> None:
    open(_marker(out, "finished"), "w").close()


def train_fault_tolerant(loss_fn, params: dict, data, cfg: TrainConfig, backend, ft: FaultToleranceConfig,
                         out: str, *, global_batch: int, replica: str, log_every: int = 0,
                         start: tuple[ReplicaState, History] | None = None,
                         save: Callable[[ReplicaState, History], str] | None = None) -> FTResult:
    """Train this replica until `cfg.steps` steps are committed by the job (see the module doc).

    `start`: the state and history of a checkpoint to continue from (`--resume`); `save(state,
    history)` writes a checkpoint and returns its path, called on one replica per due step."""
    from torch.distributed import ReduceOp
    import torch

    from accel.distributed.fault_tolerance.manager import make_manager

    backend = accel.get_backend(backend)
    compute = dt.as_dtype(cfg.dtype)
    check_compute_dtype(backend, compute)
    data.check(cfg.seq_len)
    master = master_dtype(compute)
    plan = StepPlan(global_batch, cfg.batch_size, ft.replicas, ft.batch_policy)
    optimizer = cfg.optimizer()
    layout = FlatLayout.of(params)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    events = EventLog(out, replica)
    events.emit("start", restart=restart, backend=backend.spec, spare=ft.spare_device or None)
    if start is None:
        start = ReplicaState(params, optimizer.init(params), 0, 0, cfg.seed), History()
    if start[0].samples != start[0].step * plan.global_batch:
        raise TrainConfigError(f"the checkpoint is at step {start[0].step} with data cursor {start[0].samples}, "
                               f"which is not step × global batch {plan.global_batch}",
                               hint="resume with the global batch the checkpoint was trained with "
                                    "(--global-batch-size)")
    holder = {"state": start[0], "history": History(list(start[1].losses), list(start[1].participants))}
    first_step = start[0].step
    failover = DeviceFailover(backend, ft.spare_device, events)
    failover.remember(holder["state"])
    loss_and_grad = value_and_grad(make_loss(loss_fn, compute))

    def state_dict() -> dict:
        maybe_pause("send_state", holder["state"].step, replica, restart, events)
        return {**to_wire(holder["state"]), **holder["history"].to_wire()}

    def load_state_dict(wire: dict) -> None:
        maybe_pause("recv_state", int(wire["counters"][1]), replica, restart, events)
        holder["state"] = from_wire(wire, holder["state"], failover.backend)
        holder["history"] = History.from_wire(wire)
        failover.remember(holder["state"])

    manager, _store = make_manager(ft, replica, state_dict, load_state_dict)
    if first_step:  # resumed: torchft's step is the checkpoint's, so the quorum starts there
        manager.load_state_dict({"step": first_step, "batches_committed": 0})
        events.emit("resumed", step=first_step, samples=start[0].samples)
    if not os.path.exists(_marker(out, "committed")):  # heartbeating now: the lighthouse waits for us
        wait_for_peers(out, replica, ft.replicas, ft.quorum_timeout_s)
    result = FTResult()
    started = time.perf_counter()
    last_commit = started
    seen_participants = None
    try:
        while True:
            t0 = time.perf_counter()
            before = manager.current_step()
            manager.start_quorum()
            step = manager.current_step()
            n, rank = manager.num_participants(), manager.participating_rank()
            if step != before:
                healed = holder["state"]
                if manager.errored() is None and (healed.step, healed.samples) != (step, step * plan.global_batch):
                    manager.report_error(RuntimeError(  # a peer's state that disagrees with its step
                        f"healed to step {healed.step} / cursor {healed.samples}, the quorum is at step {step}"))
                events.emit("heal", from_step=before, to_step=step, seconds=time.perf_counter() - t0,
                            ok=manager.errored() is None)
            if step == before and manager.errored() is not None:  # e.g. a heal whose sender died
                events.emit("quorum_failed", step=step, cause=_cause(manager.errored()),
                            detected_after=time.perf_counter() - t0)
            if n != seen_participants:
                events.emit("quorum", step=step, participants=n, rank=rank,
                            since_last_commit=time.perf_counter() - last_commit)
                seen_participants = n
            if step >= cfg.steps:
                break
            if step == first_step and n == 1 and ft.replicas > 1 and job_finished(out):
                events.emit("orphan", reason="the job finished before this replica joined")
                break
            state = holder["state"]
            ids = plan.samples(step, n, rank) if rank is not None else range(0)  # not participating
            try:
                vector, state = failover.run(
                    lambda s: local_gradient(loss_and_grad, s, data, ids, plan, n, cfg, layout, failover.backend),
                    state)
                holder["state"] = state
            except accel.DeviceError as exc:  # no spare left: contribute nothing, fail the step everywhere
                vector = np.zeros(layout.size + 1, dtype=np.float64)
                manager.report_error(exc)
            # logged before the all-reduce: a replica killed inside it, after a peer's all-reduce
            # already completed (that peer then commits), has still recorded its share
            events.emit("step", step=step, quorum=getattr(manager, "_quorum_id", None), participants=n,
                        rank=rank, samples=[ids.start, ids.stop])
            maybe_pause("allreduce", step, replica, restart, events)
            buf = torch.from_numpy(vector)
            manager.allreduce(buf, reduce_op=ReduceOp.SUM).wait()
            committed = manager.should_commit()
            now = time.perf_counter()
            if not committed:
                result.steps_redone += 1
                events.emit("step_aborted", step=step, participants=n, cause=_cause(manager.errored()),
                            detected_after=now - t0)
                continue
            loss = float(buf[-1])
            if not math.isfinite(loss):
                raise DivergenceError(f"fault-tolerant training diverged at step {step}: loss {loss}",
                                      hint="lower --lr or raise --warmup")
            # a DeviceError in the update moves to the spare too and re-applies the same reduced
            # gradient to the snapshot (without a spare it ends the process: torchrun restarts it)
            holder["state"], _ = failover.run(
                lambda s: apply_update(optimizer, s, buf.numpy(), layout, cfg, failover.backend, master, plan,
                                       step), holder["state"])
            failover.remember(holder["state"])
            if not result.losses:
                open(_marker(out, "committed"), "w").close()
            events.emit("commit", step=step, loss=loss, participants=n)
            result.losses.append(loss)
            result.participants.append(n)
            history = holder["history"]
            del history.losses[step:], history.participants[step:]  # a heal may have brought a longer one
            history.losses.append(loss)
            history.participants.append(n)
            if save is not None and rank == 0 and cfg.checkpoint_due(step + 1):
                t_save = time.perf_counter()
                path = save(holder["state"], history)
                result.checkpoints.append(path)
                events.emit("checkpoint", step=step + 1, path=path, participants=n,
                            seconds=time.perf_counter() - t_save)
            result.committed_seconds += now - t0
            last_commit = now
            if log_every and (step + 1) % log_every == 0:
                print(f"[accel ft] replica {replica}: step {step + 1}/{cfg.steps} loss {loss:.4f} "
                      f"replicas {n}", flush=True)
    finally:
        manager.shutdown(wait=False)
    result.seconds = time.perf_counter() - started
    result.state = holder["state"]
    result.history = holder["history"]
    if result.state.step >= cfg.steps:
        mark_finished(out)
    events.emit("done", step=result.state.step, committed_here=len(result.losses),
                steps_redone=result.steps_redone, seconds=result.seconds)
    events.close()
    return result


def replay(loss_fn, params: dict, data, cfg: TrainConfig, backend, *, global_batch: int, replicas: int,
           policy: str, participants: list[int]) -> tuple[list[float], ReplicaState]:
    """The same training in one process without torchft: step s is split among `participants[s]`
    shares as the job split it and the shares' float64 sums are added here. A fault-tolerant run
    whose training.json recorded this participation must match it (tests/distributed)."""
    backend = accel.get_backend(backend)
    compute = dt.as_dtype(cfg.dtype)
    plan = StepPlan(global_batch, cfg.batch_size, replicas, policy)
    optimizer = cfg.optimizer()
    layout = FlatLayout.of(params)
    loss_and_grad = value_and_grad(make_loss(loss_fn, compute))
    state = ReplicaState(params, optimizer.init(params), 0, 0, cfg.seed)
    losses = []
    for step, n in enumerate(participants):
        total = np.zeros(layout.size + 1, dtype=np.float64)
        for rank in range(n):
            total += local_gradient(loss_and_grad, state, data, plan.samples(step, n, rank), plan, n, cfg,
                                    layout, backend)
        losses.append(float(total[-1]))
        state = apply_update(optimizer, state, total, layout, cfg, backend, master_dtype(compute), plan, step)
    return losses, state
