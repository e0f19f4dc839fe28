"""One process: init without a launcher, the collectives' rules, bad launches refused with the
fix, per-rank backend selection, and torchrun really running `python -m accel` on 2 ranks."""
from __future__ import annotations

import numpy as np
import pytest

import accel
import accel.distributed as dist
from accel.core.errors import DistributedError, DTypeError, OpError, ShapeError
from accel.distributed.launch import torchrun_args

pytest.importorskip("torch.distributed")

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    dist.shutdown()
    yield
    dist.shutdown()


def test_one_rank_needs_no_process_group(no_launcher):
    info = dist.init(backend="numpy")
    assert info == dist.DistInfo(0, 1, 0, None, "numpy")
    assert dist.init() is info  # idempotent
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_initialized()) == (0, 1, 0, True)
    x = accel.tensor(np.arange(6, dtype=np.float32).reshape(3, 2), backend="numpy")
    for out in (dist.all_reduce(x, "mean"), dist.reduce_scatter(x), dist.all_gather(x), dist.broadcast(x)):
        np.testing.assert_array_equal(out.numpy(), x.numpy())
    assert [t.numpy().tolist() for t in dist.all_reduce_buckets([x, x[0]], bucket_bytes=8)] == [
        x.numpy().tolist(), [0.0, 1.0]]
    dist.check_agreement("config", "anything")  # nothing to compare with
    dist.barrier()


def test_the_rules_refuse_bad_input(no_launcher):
    x = accel.tensor(np.ones((4, 2), np.int32), backend="numpy")
    with pytest.raises(DTypeError, match="needs a floating input"):
        dist.all_reduce(x, "mean")
    with pytest.raises(OpError, match="unknown reduction op='min'"):
        dist.all_reduce(x, "min")
    with pytest.raises(OpError, match="reduce_scatter: unknown reduction op='max'"):
        dist.reduce_scatter(x, "max")
    with pytest.raises(ShapeError, match="a 0-d tensor has none"):
        dist.all_gather(accel.tensor(np.float32(1.0), backend="numpy"))
    with pytest.raises(OpError, match="src=1 is not a rank of this job"):
        dist.broadcast(x, src=1)
    with pytest.raises(DTypeError, match="bool"):
        dist.all_reduce(accel.tensor(np.ones(3, bool), backend="numpy"))


def test_bad_launches_say_what_to_do(no_launcher, monkeypatch):
    with pytest.raises(DistributedError, match="rank 3 is not in a job of world size 2"):
        dist.init(rank=3, world_size=2, backend="numpy")
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT not set") as err:
        dist.init(rank=0, world_size=2, backend="numpy")
    assert "torchrun" in str(err.value)
    assert not dist.is_initialized()


def test_a_backend_without_a_collective_library_is_refused(no_launcher):
    from accel.backends.numpy.backend import NumpyBackend

    class NoComm(NumpyBackend):
        name = "nocomm-test"
        is_reference = False
        collective_backend = None

    accel.register_backend(NoComm)
    assert accel.get_backend("nocomm-test").capabilities().collective_backend is None
    assert accel.get_backend("numpy").capabilities().collective_backend == "gloo"
    with pytest.raises(DistributedError, match="declares no collective library") as err:
        dist.init(rank=0, world_size=2, master_addr="127.0.0.1", master_port=1, backend="nocomm-test")
    assert "accel info" in str(err.value)


def test_torchrun_command_lines():
    assert torchrun_args(["train", "--steps", "3"], 4) == [
        "--nproc-per-node=4", "--nnodes=1", "--max-restarts=0", "--standalone", "-m", "accel", "train", "--steps", "3"]
    multi = torchrun_args(["train"], 8, nnodes=2, rdzv_endpoint="node0:29400", node_rank=1)
    assert "--rdzv-endpoint=node0:29400" in multi and "--rdzv-backend=c10d" in multi and "--node-rank=1" in multi
    assert "--standalone" not in multi
    with pytest.raises(DistributedError, match="needs a rendezvous endpoint"):
        torchrun_args(["train"], 8, nnodes=2)
    with pytest.raises(DistributedError, match="positive number of processes"):
        torchrun_args(["train"], 0)


def test_worker_argv_drops_the_launch_flags():
    argv = ["train", "--nproc-per-node", "3", "--steps", "5", "--nnodes=2", "--rdzv-endpoint", "h:1", "--lr", "1e-3"]
    assert dist.worker_argv(argv) == ["train", "--steps", "5", "--lr", "1e-3"]


def test_backend_per_local_rank():
    assert dist.backend_for_local_rank(None, 3) is None
    assert [dist.backend_for_local_rank("torch:cpu,numpy,npusim", r) for r in range(3)] == ["torch:cpu", "numpy", "npusim"]
    assert dist.backend_for_local_rank("numpy", 5) == "numpy"
    assert dist.backend_for_local_rank("torch:cpu", 1) == "torch:cpu"  # one host device: no index
    with pytest.raises(DistributedError, match="lists 2 backends .* local rank 2"):
        dist.backend_for_local_rank("numpy,npusim", 2)
    with pytest.raises(DistributedError, match="empty entry"):
        dist.backend_for_local_rank("numpy,,npusim", 0)


def test_torchrun_runs_python_m_accel_on_two_ranks(capfd):
    assert dist.run_torchrun(["--version"], 2) == 0
    assert capfd.readouterr().out.count(f"accel {accel.__version__}") == 2
    with pytest.raises(DistributedError, match=r"rank \d failed first with exit code 2"):
        dist.run_torchrun(["no-such-command"], 2)


def test_bucket_plan_keeps_order_dtype_and_size():
    def t(n, dtype=np.float32):
        return accel.tensor(np.zeros(n, dtype), backend="numpy")

    tensors = [t(4), t(4), t(10), t(2, np.float64), t(1), t(30), t(1)]  # bytes 16 16 40 16 4 120 4
    plan = dist.plan_buckets(tensors, bucket_bytes=40)
    assert [b.indices for b in plan] == [(0, 1), (2,), (3,), (4,), (5,), (6,)]
    assert [b.nbytes for b in plan] == [32, 40, 16, 4, 120, 4]  # a tensor over the cap travels alone
    assert [b.indices for b in dist.plan_buckets(tensors, 10 ** 9)] == [(0, 1, 2), (3,), (4, 5, 6)]
    with pytest.raises(OpError, match="bucket_bytes must be positive"):
        dist.plan_buckets(tensors, 0)
