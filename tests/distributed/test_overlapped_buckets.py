"""Gradient buckets start during the backward pass (2 real processes, gloo on 127.0.0.1): on the
last micro-batch the data-parallel reducer launches a bucket's all-reduce from value_and_grad's
on_grad_ready hook while the walk is still producing other gradients (the collective engine's
own call counter against the ops the walk dispatches after it, seen by a dispatch interceptor),
in plan order on both ranks, and the reduced gradient is
the mean over ranks and micro-batches worked out in numpy float64 from each rank's plain
value_and_grad gradients."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch.distributed")

from spawn_ranks import run_ranks  # noqa: E402

BUCKET_BYTES = 4096   # the micro model's parameters fill about a dozen buckets


def scenario(backend: str) -> dict:
    import accel
    import accel.distributed as dist
    from accel.autodiff.autograd import value_and_grad
    from accel.models.config import LlamaConfig
    from accel.models.llama import forward, init_params
    from accel import ops
    from accel.core import dispatch
    from accel.train.comm import TorchComm
    from accel.train.reducers import BucketedMean, GradBuckets

    config = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                         max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=False)
    dist.init(backend=backend, timeout_s=60)
    rank = dist.rank()
    params = init_params(config, seed=3, backend=backend, dtype=accel.float32)
    rng = np.random.default_rng(10 + rank)
    batches = [accel.from_numpy(rng.integers(0, config.vocab_size, (2, 7)), backend) for _ in range(2)]

    def loss(p, ids):
        logits = forward(p, config, ids, ops.arange(ids.shape[1], backend=backend))
        return ops.cross_entropy(logits[:, :-1], ids[:, 1:])

    plain = [value_and_grad(loss)(params, ids)[1] for ids in batches]   # the reference's inputs

    plan = GradBuckets.reverse_of(params, BUCKET_BYTES)
    reducer = BucketedMean(2, TorchComm(dist), plan)
    reducer.add(value_and_grad(loss)(params, batches[0])[1])           # micro-batch 0: local only
    calls = lambda: dist.collective_stats.snapshot().get("all_reduce", {}).get("calls", 0)  # noqa: E731
    before = calls()
    events = []
    walk_ops = []          # every op the backward walk itself dispatches (the hook's own excluded)
    in_hook = [False]

    def count_ops(op, args, attrs):
        if not in_hook[0]:
            walk_ops.append(op.name)
        return NotImplemented          # runs as usual

    def hook(path, grad):
        in_hook[0] = True
        reducer.on_grad_ready(path, grad)
        in_hook[0] = False
        events.append([path[0], len(reducer.launched), calls() - before, len(walk_ops)])

    dispatch.push_interceptor(count_ops)
    try:
        value_and_grad(loss, on_grad_ready=hook)(params, batches[1])   # the last micro-batch
    finally:
        dispatch.pop_interceptor(count_ops)
    launched_by_walk = len(reducer.launched)
    walk_ops_total = len(walk_ops)
    reduced = reducer.finish().wait()

    # the next step's plan follows the order this walk finished the gradients (Trainer.relearn_buckets)
    learned = GradBuckets.plan(params, reducer.ready_order, BUCKET_BYTES)
    reducer = BucketedMean(1, TorchComm(dist), learned)
    learned_events = []
    value_and_grad(loss, on_grad_ready=lambda path, g: (reducer.on_grad_ready(path, g),
                                                        learned_events.append([path[0], len(reducer.launched)])))(
        params, batches[0])
    reducer.finish().wait()
    return {"events": events, "buckets": [list(b) for b in plan.buckets], "launched_by_walk": launched_by_walk,
            "walk_ops_total": walk_ops_total,
            "learned_events": learned_events, "learned_buckets": [list(b) for b in learned.buckets],
            "plain": [{k: v.numpy().tolist() for k, v in g.items()} for g in plain],
            "reduced": {k: v.numpy().tolist() for k, v in reduced.items()}}


@pytest.fixture(scope="module")
def ranks():
    results = run_ranks(scenario, ["numpy", "numpy"])
    for r in results:
        assert "crashed" not in r, r.get("crashed")
    return results


def test_first_bucket_launched_while_the_backward_still_ran(ranks):
    for r in ranks:
        events = r["events"]
        assert len(events) == len({e[0] for e in events}) == sum(len(b) for b in r["buckets"])
        first = next(i for i, e in enumerate(events) if e[1] > 0)
        # the engine counted the all-reduce at that point, and the walk went on to dispatch more
        # of the backward's ops and finish more gradients after it
        assert events[first][2] >= 1
        assert first < len(events) - 1
        assert r["walk_ops_total"] - events[first][3] > 20, (r["walk_ops_total"], events[first])
        assert len(r["buckets"]) > 2 and r["launched_by_walk"] == len(r["buckets"])


def test_buckets_launched_in_plan_order_once_complete_and_alike_on_both_ranks(ranks):
    for r in ranks:
        ready: set[str] = set()
        launched = 0
        for name, count, engine_calls, _ in r["events"]:
            ready.add(name)
            assert count >= launched and engine_calls == count      # one collective per bucket
            for k in range(launched, count):                        # bucket k only once complete
                assert set(r["buckets"][k]) <= ready
            launched = count
    assert ranks[0]["events"] == ranks[1]["events"] and ranks[0]["buckets"] == ranks[1]["buckets"]


def test_with_the_learned_plan_each_bucket_leaves_with_its_last_gradient(ranks):
    """In the order the walk finishes gradients, no bucket waits for a later one."""
    for r in ranks:
        ready: set[str] = set()
        for name, count in r["learned_events"]:
            ready.add(name)
            complete = 0
            while complete < len(r["learned_buckets"]) and set(r["learned_buckets"][complete]) <= ready:
                complete += 1
            assert count == complete
        assert r["learned_buckets"] != r["buckets"]     # the reverse parameter order was not it


def test_reduced_gradient_is_the_mean_over_ranks_and_micro_batches(ranks):
    for name in ranks[0]["reduced"]:
        want = np.mean([np.array(r["plain"][m][name], np.float64) for r in ranks for m in range(2)], axis=0)
        for r in ranks:
            got = np.array(r["reduced"][name])
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max(), err_msg=name)
