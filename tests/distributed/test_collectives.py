"""Collectives across 3 real processes (gloo on 127.0.0.1), against numpy float64 over every
rank's input: every op, every dtype the ranks' backends declare, odd and empty shapes, NaN/inf,
on numpy, torch:cpu and npusim, and on a mixed fleet (rank 0 torch:cpu, rank 1 numpy, rank 2
npusim); bucketed all_reduce; a rank that disagrees; a rank that never joins a collective.

One spawn runs every scenario (each process pays its imports once); the tests read its results.
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch.distributed")

from spawn_ranks import run_ranks  # noqa: E402

FLEET = ["torch:cpu", "numpy", "npusim"]
UNIFORM = ("numpy", "torch:cpu", "npusim")


def scenario(own_backend: str) -> dict:
    """Run on every rank: init as a member of the mixed fleet, then each configuration."""
    import numpy as np

    import accel
    import accel.distributed as dist
    from accel.core.errors import CollectiveError, DistributedError
    from accel.distributed.conformance import check_buckets, check_collectives

    import time

    clock = [("start", time.time())]
    info = dist.init(backend=own_backend, timeout_s=60)
    clock.append(("init", time.time()))
    out: dict = {"info": [info.rank, info.world_size, info.local_rank, info.comm_backend, info.accel_backend],
                 "fleet": list(dist.fleet()), "rows": {}}
    for name in (*UNIFORM, "mixed"):
        backend = own_backend if name == "mixed" else name
        rows = check_collectives(backend) + check_buckets(backend)
        out["rows"][name] = [[r.id, r.passed, r.reason] for r in rows]
        clock.append((name, time.time()))

    # counted: numpy stages through a host view, torch:cpu hands its tensor to gloo directly
    dist.collective_stats.reset()
    x = accel.tensor(np.full((4, 2), float(info.rank + 1), np.float32), backend=own_backend)
    backend = accel.get_backend(own_backend)
    backend.reset_counters()
    summed = dist.all_reduce(x, op="sum")
    out["device_counters"] = {k: v for k, v in backend.counters().items() if k.endswith("_bytes")}
    out["sum"] = summed.numpy().tolist()
    out["input_after"] = x.numpy().tolist()  # the input must be left as it was
    out["stats"] = dist.collective_stats.snapshot()

    out["grads"] = _gradients(info.rank, own_backend)

    try:  # rank 1 was given another config
        dist.check_agreement("model config", "dim=64" if info.rank != 1 else "dim=32")
        out["agreement"] = None
    except DistributedError as exc:
        out["agreement"] = str(exc)
    dist.check_agreement("model config", "dim=64")  # agreeing ranks pass

    accel.set_checked(True)  # checked mode compares every collective's call across ranks first
    try:
        rows = 3 if info.rank == 1 else 4
        dist.all_gather(accel.tensor(np.ones((rows, 2), np.float32), backend=own_backend))
        out["checked"] = None
    except CollectiveError as exc:
        out["checked"] = str(exc)
    finally:
        accel.set_checked(False)

    # last: rank 2 never joins an all_reduce; the others must say so. First on a group whose own
    # torch.distributed timeout is 2 s (what init(timeout_s=...) sets on the data group) ...
    import datetime

    import torch.distributed as tdist
    from torch.distributed import distributed_c10d

    from accel.distributed.engine import Engine

    store = distributed_c10d._get_default_store()
    short = tdist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=2))
    if info.rank == 2:
        store.wait(["c1-test/group-timeout-reported/0", "c1-test/group-timeout-reported/1"])
        out["group_timeout"] = None
    else:
        try:
            Engine(short, "gloo", info.rank, 3, 2.0)("all_reduce", x, {"op": "sum"})
            out["group_timeout"] = "no error"
        except CollectiveError as exc:
            out["group_timeout"] = str(exc)
        store.set(f"c1-test/group-timeout-reported/{info.rank}", "1")
    # ... then with a per-call bound (collective_timeout) on the job's own data group
    if info.rank == 2:
        store.wait(["c1-test/timeout-reported/0", "c1-test/timeout-reported/1"])
        out["timeout"] = None
    else:
        try:
            with dist.collective_timeout(2.0):
                dist.all_reduce(x)
            out["timeout"] = "no error"
        except CollectiveError as exc:
            out["timeout"] = str(exc)
        store.set(f"c1-test/timeout-reported/{info.rank}", "1")
    clock.append(("end", time.time()))
    out["clock"] = [(k, round(t - clock[0][1], 2)) for k, t in clock]
    return out


def _grad_weights(rank: int):
    """Per-rank weights of the local losses (the test recomputes them for its reference)."""
    import numpy as np

    return {"all_gather": np.arange(18, dtype=np.float32).reshape(9, 2) + 100 * rank,
            "reduce_scatter": np.arange(4, dtype=np.float32).reshape(2, 2) + rank + 1}


def _gradients(rank: int, backend: str) -> dict:
    """accel.grad through each collective; the global loss is the sum of the ranks' losses."""
    import numpy as np

    import accel
    from accel import ops

    w = {k: accel.tensor(v, backend=backend) for k, v in _grad_weights(rank).items()}
    c = float(rank + 1)
    x = accel.tensor(np.arange(6, dtype=np.float32).reshape(3, 2) * c, backend=backend)
    x6 = accel.tensor(np.arange(12, dtype=np.float32).reshape(6, 2) * c, backend=backend)
    losses = {
        "all_reduce": (lambda t: ops.sum(ops.mul(ops.all_reduce(t, op="sum"), c)), x),
        "all_reduce_mean": (lambda t: ops.sum(ops.mul(ops.all_reduce(t, op="mean"), c)), x),
        "all_gather": (lambda t: ops.sum(ops.mul(ops.all_gather(t), w["all_gather"])), x),
        "reduce_scatter": (lambda t: ops.sum(ops.mul(ops.reduce_scatter(t), w["reduce_scatter"])), x6),
        "broadcast": (lambda t: ops.sum(ops.mul(ops.broadcast(t, src=1), c)), x),
    }
    return {name: accel.grad(fn)(arg).numpy().tolist() for name, (fn, arg) in losses.items()}


@pytest.fixture(scope="module")
def ranks():
    results = run_ranks(scenario, FLEET)
    crashed = [r["crashed"] for r in results if "crashed" in r]
    assert not crashed, crashed[0]
    return results


def test_init_from_the_environment(ranks):
    import accel

    specs = [accel.get_backend(name).spec for name in FLEET]
    for r, result in enumerate(ranks):
        assert result["info"] == [r, 3, r, "gloo", specs[r]]
        assert result["fleet"] == specs


@pytest.mark.parametrize("config", [*UNIFORM, "mixed"])
def test_every_collective_matches_numpy_float64(ranks, config):
    for r, result in enumerate(ranks):
        rows = result["rows"][config]
        ids = {row[0] for row in rows}
        # every op ran, with odd and empty shapes, in float32, bfloat16 and int32 at least
        for needle in ("all_reduce[float32] shape=(273,) op=sum", "all_reduce[bfloat16] shape=(5, 7) op=mean",
                       "all_reduce[float32] shape=(11, 13) values=special op=max",
                       "reduce_scatter[float32] shape=(0,) op=sum", "reduce_scatter[int32] shape=(1, 13, 1) op=sum",
                       "all_gather[float32] shape=(2, 0, 3)", "all_gather[bool] shape=(5, 7)",
                       "broadcast[float16] shape=(273,) src=2", "all_reduce_buckets[float32]"):
            assert any(i.startswith(needle) for i in ids), (config, r, needle)
        failed = [f"{row[0]}: {row[2]}" for row in rows if not row[1]]
        assert not failed, f"{config} rank {r}: {len(failed)} of {len(rows)} failed:\n" + "\n".join(failed[:10])


def test_each_dtype_the_backends_declare(ranks):
    import accel

    for config in UNIFORM:
        declared = {d.name for d in accel.get_backend(config).dtypes}
        ran = {row[0].split("[")[1].split("]")[0] for row in ranks[0]["rows"][config]}
        assert ran == declared, (config, declared ^ ran)


def test_sum_across_ranks_and_input_untouched(ranks):
    for result in ranks:
        assert result["sum"] == [[6.0, 6.0]] * 4  # 1 + 2 + 3
    for r, result in enumerate(ranks):
        assert result["input_after"] == [[float(r + 1)] * 2] * 4


def test_host_path_is_counted(ranks):
    by_backend = {FLEET[r]: ranks[r]["stats"]["all_reduce"] for r in range(3)}
    assert by_backend["torch:cpu"]["host_path"] == 0 and by_backend["torch:cpu"]["staged_bytes"] == 0
    for name in ("numpy", "npusim"):
        assert by_backend[name]["host_path"] == 1 and by_backend[name]["staged_bytes"] == 4 * 2 * 4
    assert all(s["calls"] == 1 and s["bytes"] == 32 for s in by_backend.values())
    # npusim's host link: the d2h copy out and the h2d copy back, in its own transfer ledger
    assert ranks[2]["device_counters"] == {"h2d_bytes": 32, "d2h_bytes": 32}


def test_disagreeing_rank_is_named(ranks):
    for result in ranks:
        message = result["agreement"]
        assert message is not None
        assert "ranks disagree on model config: rank(s) 1 differ from rank(s) 0, 2" in message


def test_checked_mode_names_a_rank_calling_another_shape(ranks):
    for r, result in enumerate(ranks):
        message = result["checked"]
        assert message is not None and "collective #" in message
        if r == 1:
            assert "rank 1 calls all_gather(float32[3, 2]) but rank(s) 0, 2 call" in message, message
        else:
            assert f"rank {r} calls all_gather(float32[4, 2]) but rank(s) 1 call rank 1: all_gather(float32[3, 2])" in message, message


def test_gradients_through_collectives(ranks):
    """d(sum over ranks of each rank's loss)/d(this rank's input), worked out in numpy."""
    import numpy as np

    ones = np.ones((3, 2))
    c_total = 1 + 2 + 3
    weights = [_grad_weights(r) for r in range(3)]
    for r, result in enumerate(ranks):
        g = {k: np.array(v) for k, v in result["grads"].items()}
        np.testing.assert_allclose(g["all_reduce"], c_total * ones)
        np.testing.assert_allclose(g["all_reduce_mean"], c_total / 3 * ones)
        np.testing.assert_allclose(g["all_gather"], sum(w["all_gather"][3 * r:3 * r + 3] for w in weights))
        np.testing.assert_allclose(g["reduce_scatter"], np.concatenate([w["reduce_scatter"] for w in weights]))
        np.testing.assert_allclose(g["broadcast"], (c_total if r == 1 else 0) * ones)


def test_rank_that_never_joins_is_named_on_timeout(ranks):
    for r in (0, 1):
        message = ranks[r]["group_timeout"]
        assert "all_reduce (collective #1) of float32[4, 2]" in message, message
        assert "timed out after 2 s" in message and "rank(s) 2 never reached it" in message, message
        message = ranks[r]["timeout"]
        assert "all_reduce (collective #" in message and "timed out after 2 s" in message, message
        assert f"on rank {r} of 3" in message and "rank(s) 2 never reached it" in message, message
