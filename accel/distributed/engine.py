"""How an accel tensor takes part in a torch.distributed collective, for any backend.

Two paths, chosen per tensor by its backend's declarations (never by its name):
- device: the backend's `torch_view` hands the native torch tensor to the library the job runs
  on (nccl, hccl, ... or gloo for torch:cpu) with no copy beyond the result buffer;
- host: `to_numpy` (a zero-copy view for numpy, a counted device-to-host copy for npusim),
  `torch.from_numpy` over it, gloo, and `from_numpy` back.

Dtypes that a library cannot reduce (float8) are reduced in float32 through accel's `cast` op
(counted by the dispatcher, counted here as an upcast, warned once); moving them (all_gather,
broadcast) sends their raw bytes, bit exact. A failure or timeout becomes a CollectiveError that
names the op, its sequence number and the ranks that never reached it.
"""
from __future__ import annotations

import contextlib
import datetime
import threading
import time
import warnings
from collections import defaultdict
from typing import Callable

import numpy as np

from accel.core import dispatch, dtypes as dt
from accel.core.errors import CollectiveError
from accel.core.tensor import Tensor

# gloo has no float8 type at all and nccl's float8 support depends on its version, so float8 is
# reduced in float32 (the upcast is exact; the sum rounds once at the end) and moved as raw bytes.
FLOAT8 = frozenset({dt.float8_e4m3fn, dt.float8_e5m2})
# numpy holds these as ml_dtypes arrays; torch.from_numpy takes their bits (same-width uints).
_RAW_BITS = {dt.float8_e4m3fn: np.uint8, dt.float8_e5m2: np.uint8, dt.bfloat16: np.uint16}
FAILURE_GRACE_MAX_S = 10.0  # how long a failed rank waits for the others to report the failure


# --- counters -------------------------------------------------------------------------------
class CollectiveStats:
    """Per collective: calls, payload bytes, seconds in the call, how many took the host path,
    bytes staged through host memory, float32 upcasts."""

    FIELDS = ("calls", "bytes", "seconds", "host_path", "staged_bytes", "upcasts")

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(self.FIELDS, 0))

    def add(self, op: str, **values) -> None:
        with self._lock:
            row = self.counts[op]
            for key, value in values.items():
                row[key] += value

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {op: dict(row) for op, row in sorted(self.counts.items())}

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


stats = CollectiveStats()


# --- accel tensor <-> torch tensor ------------------------------------------------------------
def _torch():
    import torch

    return torch


def _torch_dtype(dtype: dt.DType):
    torch = _torch()
    return {dt.bool_: torch.bool, dt.int8: torch.int8, dt.int32: torch.int32, dt.int64: torch.int64,
            dt.float16: torch.float16, dt.bfloat16: torch.bfloat16, dt.float32: torch.float32,
            dt.float64: torch.float64, dt.float8_e4m3fn: torch.float8_e4m3fn,
            dt.float8_e5m2: torch.float8_e5m2}[dtype]


def _from_host(array: np.ndarray, dtype: dt.DType):
    """torch.from_numpy over `array` (no copy); ml_dtypes arrays through their raw bits."""
    torch = _torch()
    raw = _RAW_BITS.get(dtype)
    view = array.view(raw) if raw is not None else array
    if not view.flags.writeable:  # read-only inputs are only read; torch warns regardless
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(view)
    else:
        t = torch.from_numpy(view)
    return t.view(_torch_dtype(dtype)) if raw is not None else t


def _to_host(t, dtype: dt.DType) -> np.ndarray:
    torch = _torch()
    raw = _RAW_BITS.get(dtype)
    if raw is None:
        return t.numpy()
    return t.view(torch.uint8 if raw is np.uint8 else torch.uint16).numpy().view(dtype.numpy)


class Staged:
    """One accel tensor as a torch tensor the comm library can take, and the way back."""

    __slots__ = ("tensor", "backend", "dtype", "host")

    def __init__(self, tensor, backend, dtype: dt.DType, host: bool):
        self.tensor, self.backend, self.dtype, self.host = tensor, backend, dtype, host

    def wrap(self, result) -> Tensor:
        """A torch result (same path as the input) as an accel Tensor on the input's backend."""
        if not self.host:
            return Tensor(result, self.backend)
        return Tensor(self.backend.from_numpy(_to_host(result, self.dtype)), self.backend)

    def empty(self, shape):
        """A result buffer next to the staged tensor (same device, dtype)."""
        return _torch().empty(shape, dtype=self.tensor.dtype, device=self.tensor.device)


def stage(x: Tensor, comm: str, *, writable: bool, op: str, donated: bool = False) -> Staged:
    """`x` as a contiguous torch tensor for library `comm`; `writable` gives a private buffer
    (in-place collectives) so the input is never changed, unless the caller `donated` `x` (a
    buffer it made for this call and never reads again, e.g. a gradient bucket)."""
    backend = x.backend
    view = backend.torch_view(x.data) if backend.collective_backend == comm else None
    if view is not None:
        private = writable and not donated
        t = view.clone(memory_format=_torch().contiguous_format) if private else view.contiguous()
        return Staged(t, backend, x.dtype, host=False)
    host = backend.to_numpy(x.data)
    owned = host.flags.writeable and (donated or (host is not x.data and host.flags.owndata))
    if (writable and not owned) or not host.flags.c_contiguous:
        host = np.array(host, order="C", copy=True)
    stats.add(op, host_path=1, staged_bytes=host.nbytes)
    return Staged(_from_host(host, x.dtype), backend, x.dtype, host=True)


# --- running a collective, with its failure explained ---------------------------------------------
def _store():
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:  # no store (or a torch without this internal): the message says less
        return None


def _absent_ranks(what: str, rank: int, world: int, grace_s: float) -> tuple[list[int], str]:
    """After a failure: report it in the job's store and wait up to `grace_s` for the other
    ranks' reports; those that never report never reached the collective (or are gone)."""
    store = _store()
    if store is None:
        return [], "the job's store is not reachable from here"
    key = f"accel/collective-failure/{what}"
    try:
        store.set(f"{key}/{rank}", "1")
        deadline = time.monotonic() + grace_s
        pending = [r for r in range(world) if r != rank]
        while pending and time.monotonic() < deadline:
            pending = [r for r in pending if not store.check([f"{key}/{r}"])]
            if pending:
                time.sleep(0.05)
        return pending, ""
    except Exception as exc:  # rank 0 hosts the store: if it died, this is how we learn it
        return [], f"the job's store (hosted by rank 0) did not answer: {type(exc).__name__}"


def run_guarded(what: str, fn: Callable, rank: int, world: int, timeout_s: float, *, seq: int | None = None,
                detail: str = ""):
    """Run `fn` (a torch.distributed call); its exception becomes a CollectiveError naming the
    op, this rank and the ranks that did not reach the call."""
    try:
        return fn()
    except Exception as exc:
        raise failure(what, exc, rank, world, timeout_s, seq=seq, detail=detail) from exc


def failure(what: str, exc: BaseException, rank: int, world: int, timeout_s: float, *,
            seq: int | None = None, detail: str = "") -> CollectiveError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    label = what if seq is None else f"{what} (collective #{seq})"
    absent, note = _absent_ranks(label.replace(" ", "_"), rank, world, min(timeout_s, FAILURE_GRACE_MAX_S))
    if timed_out:
        head = f"{label}{detail} timed out after {timeout_s:g} s on rank {rank} of {world}"
    else:
        head = f"{label}{detail} failed on rank {rank} of {world}: {type(exc).__name__}: {text}"
    if absent:
        head += f"; rank(s) {', '.join(map(str, absent))} never reached it"
    elif note:
        head += f"; {note}"
    hint = ("every rank must call the same collectives in the same order with the same shapes; "
            "a rank that crashed or hangs shows in its own log" if absent or not timed_out else
            "every rank reached it: the network or a peer's device is slow; raise timeout_s "
            "(accel.distributed.init(timeout_s=...))")
    return CollectiveError(head, hint=hint)


def all_gather_into(out, t, group) -> None:
    dist = _torch().distributed
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, t, group=group)


class Engine:
    """The collectives' implementation while a process group is up (installed into
    `accel.ops.collective.ENGINE` by init): (op name, x, attrs) -> Tensor."""

    def __init__(self, group, comm: str, rank: int, world_size: int, timeout_s: float):
        self.group, self.comm, self.rank, self.world_size = group, comm, rank, world_size
        self.timeout_s = timeout_s
        self.call_timeout_s: float | None = None  # collective_timeout(): a shorter bound per call
        self.seq = 0
        self._lock = threading.Lock()

    def __call__(self, name: str, x: Tensor, attrs: dict) -> Tensor:
        return self.start(name, x, attrs, async_op=False).wait()

    def start(self, name: str, x: Tensor, attrs: dict, *, async_op: bool = True,
              donated: bool = False) -> "Pending":
        """Launch one collective; `async_op` returns before it completes where the library can.
        `donated`: the caller gives `x` up (see `stage`), so an in-place collective needs no copy."""
        with self._lock:
            self.seq += 1
            seq = self.seq
        if dispatch.mode.checked:
            self.check_same_call(name, x, attrs, seq)
        begin = time.perf_counter()
        bounded = self.call_timeout_s is not None
        async_op = async_op or bounded  # a bounded call waits on its work handle with the bound
        upcast = name in ("all_reduce", "reduce_scatter") and x.dtype in FLOAT8
        source_dtype = x.dtype
        if upcast:
            x = _upcast(x, name, self.comm)
        launch = getattr(self, f"_{name}")
        detail = f" of {x.dtype.name}{list(x.shape)} on {x.backend.spec}"
        work, staged, result, finish = run_guarded(
            name, lambda: launch(x, attrs, async_op, donated and not upcast), self.rank, self.world_size, self.wait_s,
            seq=seq, detail=detail)
        stats.add(name, calls=1, bytes=x.nbytes, upcasts=int(upcast))
        return Pending(self, name, seq, detail, work, staged, result, finish, begin,
                       source_dtype if upcast else None)

    def check_same_call(self, name: str, x: Tensor, attrs: dict, seq: int) -> None:
        """Checked mode (ACCEL_CHECKED=1): every rank's op, dtype, shape and attributes compared
        before the call (one small all_gather on the control group). A mismatch would otherwise
        hang, or abort every process inside the library (gloo: "Received data size doesn't match
        expected size"); here it is an error naming the ranks."""
        from accel.distributed.process_group import NAME_BYTES, exchange_strings

        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(attrs.items()))
        mine = f"{name}({x.dtype.name}{list(x.shape)}{', ' + shown if shown else ''})"
        if len(mine.encode()) > NAME_BYTES:  # a long shape: its digest still tells calls apart
            from accel.distributed.agreement import checksum

            mine = f"{name}({x.dtype.name}, shape digest {checksum(mine).hex()[:16]})"
        calls = exchange_strings(mine)
        if len(set(calls)) > 1:
            odd = [r for r, c in enumerate(calls) if c != calls[self.rank]]
            raise CollectiveError(
                f"collective #{seq}: rank {self.rank} calls {calls[self.rank]} but rank(s) "
                f"{', '.join(map(str, odd))} call " + "; ".join(f"rank {r}: {calls[r]}" for r in odd),
                hint="every rank must call the same collectives in the same order with the same "
                     "dtypes and shapes")

    @property
    def wait_s(self) -> float:
        return self.timeout_s if self.call_timeout_s is None else self.call_timeout_s

    # Each returns (work handle or None, Staged, torch result, finish(result) -> result).
    def _all_reduce(self, x: Tensor, attrs: dict, async_op: bool, donated: bool):
        dist = _torch().distributed
        staged = stage(x, self.comm, writable=True, op="all_reduce", donated=donated)
        t, reduction = staged.tensor, attrs.get("op", "sum")
        if not t.numel():
            return None, staged, t, None
        if reduction == "max" and t.is_floating_point():
            return self._max_with_nan(t, staged, async_op)
        op = dist.ReduceOp.MAX if reduction == "max" else dist.ReduceOp.SUM
        work = dist.all_reduce(t, op=op, group=self.group, async_op=async_op)
        return work, staged, t, self._mean(reduction)

    def _max_with_nan(self, t, staged: Staged, async_op: bool):
        """MAX in the libraries drops NaN (gloo's std::max keeps whichever came first); accel's
        max propagates it, so a one-byte NaN mask travels beside the values (+25% on float32)."""
        dist = _torch().distributed
        nan = _torch().isnan(t).to(_torch().uint8)
        works = [dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group, async_op=async_op),
                 dist.all_reduce(nan, op=dist.ReduceOp.MAX, group=self.group, async_op=async_op)]

        def restore_nan(result):
            return result.masked_fill_(nan.bool(), float("nan"))

        return _Works(works), staged, t, restore_nan

    def _reduce_scatter(self, x: Tensor, attrs: dict, async_op: bool, donated: bool):
        dist = _torch().distributed
        staged = stage(x, self.comm, writable=False, op="reduce_scatter")
        t = staged.tensor
        out = staged.empty((t.shape[0] // self.world_size, *t.shape[1:]))
        work = None
        if t.numel():
            scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
            work = scatter(out, t, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op)
        return work, staged, out, self._mean(attrs.get("op", "sum"))

    def _all_gather(self, x: Tensor, attrs: dict, async_op: bool, donated: bool):
        dist = _torch().distributed
        staged = stage(x, self.comm, writable=False, op="all_gather")
        t = staged.tensor
        out = staged.empty((t.shape[0] * self.world_size, *t.shape[1:]))
        work = None
        if t.numel():
            src, dst = (_bytes(t), _bytes(out)) if x.dtype in FLOAT8 else (t, out)
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            work = gather(dst, src, group=self.group, async_op=async_op)
        return work, staged, out, None

    def _broadcast(self, x: Tensor, attrs: dict, async_op: bool, donated: bool):
        dist = _torch().distributed
        staged = stage(x, self.comm, writable=True, op="broadcast", donated=donated)
        t = staged.tensor
        work = None
        if t.numel():
            wire = _bytes(t) if x.dtype in FLOAT8 else t
            work = dist.broadcast(wire, src=attrs.get("src", 0), group=self.group, async_op=async_op)
        return work, staged, t, None

    def _mean(self, reduction: str):
        if reduction != "mean":
            return None
        world = self.world_size

        def divide(t):
            return t.div_(world)

        return divide


class _Works:
    """Several work handles waited as one (None entries: synchronous calls already done)."""

    def __init__(self, works):
        self.works = [w for w in works if w is not None]

    def wait(self, *timeout):
        for w in self.works:
            w.wait(*timeout)


def _bytes(t):
    return t.view(_torch().uint8)


def _upcast(x: Tensor, name: str, comm: str) -> Tensor:
    from accel.ops import cast

    dispatch.stats.warn_once((x.backend.spec, name, "collective-upcast", x.dtype.name),
                             f"accel: {name} of {x.dtype.name} on {comm} reduces in float32 "
                             f"(no {comm} reduction in {x.dtype.name}); the result is rounded once")
    return cast(x, dt.float32)


class Pending:
    """A launched collective; `wait()` gives the accel Tensor (and counts the time)."""

    __slots__ = ("engine", "name", "seq", "detail", "work", "staged", "result", "finish", "begin",
                 "downcast_to", "_done")

    def __init__(self, engine, name, seq, detail, work, staged, result, finish, begin, downcast_to):
        self.engine, self.name, self.seq, self.detail = engine, name, seq, detail
        self.work, self.staged, self.result, self.finish = work, staged, result, finish
        self.begin, self.downcast_to, self._done = begin, downcast_to, None

    def wait(self) -> Tensor:
        if self._done is not None:
            return self._done
        engine = self.engine
        if self.work is not None and not (isinstance(self.work, _Works) and not self.work.works):
            bound = () if engine.call_timeout_s is None else (datetime.timedelta(seconds=engine.call_timeout_s),)
            run_guarded(self.name, lambda: self.work.wait(*bound), engine.rank, engine.world_size, engine.wait_s,
                        seq=self.seq, detail=self.detail)
        result = self.result if self.finish is None else self.finish(self.result)
        out = self.staged.wrap(result)
        if self.downcast_to is not None:
            from accel.ops import cast

            out = cast(out, self.downcast_to)
        stats.add(self.name, seconds=time.perf_counter() - self.begin)
        self._done = out
        return out


@contextlib.contextmanager
def collective_timeout(seconds: float):
    """Bound each collective issued inside to `seconds` (shorter than the job's timeout_s):
    a rank that does not join in time raises CollectiveError on the others, naming it. After a
    timeout the group is not usable; shut down and restart (or let torchft heal the replica)."""
    from accel.ops.collective import ENGINE

    engine = ENGINE.engine
    if engine is None:  # one rank: nothing can time out
        yield
        return
    before = engine.call_timeout_s
    engine.call_timeout_s = float(seconds)
    try:
        yield
    finally:
        engine.call_timeout_s = before
