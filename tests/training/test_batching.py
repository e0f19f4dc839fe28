"""The batch plan: G = micro × accum × world, derived where it can be, refused with the valid
world sizes where it cannot; the samples of a step do not depend on the world size."""
from __future__ import annotations

import pytest

from accel.train.batching import plan_batches
from accel.train.errors import TrainConfigError


def test_derives_micro_batch_and_accumulation():
    assert (plan_batches(6, 3).micro_batch, plan_batches(6, 3).grad_accum) == (2, 1)
    p = plan_batches(32, 1, max_micro_batch=8)
    assert (p.micro_batch, p.grad_accum) == (8, 4)
    p = plan_batches(12, 2, micro_batch=3)
    assert (p.micro_batch, p.grad_accum) == (3, 2)
    p = plan_batches(12, 2, grad_accum=3)
    assert (p.micro_batch, p.grad_accum) == (2, 3)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 6, 12])
def test_a_step_takes_the_same_samples_on_any_world_size(world):
    plan = plan_batches(12, world, max_micro_batch=2)
    ids = sorted(i for r in range(world) for k in range(plan.grad_accum) for i in plan.sample_ids(5, r, k))
    assert ids == list(range(60, 72))


def test_a_size_that_does_not_divide_lists_the_valid_world_sizes():
    with pytest.raises(TrainConfigError, match="does not divide among 4 ranks") as info:
        plan_batches(6, 4)
    assert "valid world sizes: 1, 2, 3, 6" in str(info.value)
    with pytest.raises(TrainConfigError, match="cannot be split over 4 ranks") as info:
        plan_batches(12, 4, micro_batch=2)
    assert "valid world sizes: 1, 2, 3, 6" in str(info.value)
    with pytest.raises(TrainConfigError, match="not the global batch 12"):
        plan_batches(12, 2, micro_batch=2, grad_accum=2)
    with pytest.raises(TrainConfigError, match="--batch-size 5 does not divide the global batch 12"):
        plan_batches(12, 1, micro_batch=5)


def test_deterministic_reduction_fixes_the_shards():
    p = plan_batches(12, 3, shards=12)
    assert (p.micro_batch, p.grad_accum, p.shards) == (1, 4, 12)
    p = plan_batches(12, 2, shards=4)
    assert (p.micro_batch, p.grad_accum) == (3, 2)
    assert [p.shard_index(r, k) for r in range(2) for k in range(2)] == [0, 1, 2, 3]
    with pytest.raises(TrainConfigError, match="3 ranks cannot share 4 fixed reduction shards") as info:
        plan_batches(12, 3, shards=4)
    assert "valid world sizes with --deterministic-reduction: 1, 2, 4" in str(info.value)


@pytest.mark.parametrize("kwargs, words", [({"micro_batch": 0}, "--batch-size must be a positive integer"),
                                           ({"grad_accum": -1}, "--grad-accum must be a positive integer")])
def test_nonsense_is_refused(kwargs, words):
    with pytest.raises(TrainConfigError, match=words):
        plan_batches(8, 1, **kwargs)
