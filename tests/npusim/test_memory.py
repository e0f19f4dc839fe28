"""Simulated device memory: capacity, out-of-memory errors, freeing on tensor death, views and
counted host <-> device copies."""
import gc

import numpy as np
import pytest

import accel
from accel import ops
from accel.backends.npusim import NpuSimBackend


@pytest.fixture
def chip():
    return NpuSimBackend("minimal")


def test_allocation_beyond_capacity_raises_out_of_memory_with_requested_and_free_bytes(chip):
    chip.configure(memory_capacity=1000)
    keep = accel.from_numpy(np.zeros(200, np.float32), backend=chip)      # 800 bytes
    assert chip.memory.in_use == 800
    with pytest.raises(accel.OutOfMemoryError) as info:
        accel.from_numpy(np.zeros(100, np.float32), backend=chip)         # 400 more: too many
    message = str(info.value)
    assert "requested 400 bytes, free 200 bytes" in message
    assert "npusim:minimal" in message and "HINT:" in message
    assert isinstance(info.value, accel.DeviceError)
    assert chip.memory.in_use == 800, "a failed allocation reserves nothing"
    del keep


def test_kernel_output_that_does_not_fit_names_the_op(chip):
    chip.configure(memory_capacity=256 + 100)
    x = accel.from_numpy(np.ones((8, 8), np.float32), backend=chip)       # 256 bytes
    with pytest.raises(accel.OutOfMemoryError, match="the output of add"):
        ops.add(x, x)


def test_memory_is_freed_when_the_tensor_dies(chip):
    base = chip.memory.in_use
    x = accel.from_numpy(np.ones((64, 64), np.float32), backend=chip)
    y = ops.mul(x, 2.0)
    assert chip.memory.in_use == base + 2 * 64 * 64 * 4     # x and y (the scalar 2.0 died with the call)
    del x, y
    gc.collect()
    assert chip.memory.in_use == base
    assert chip.memory.peak >= base + 2 * 64 * 64 * 4


def test_views_reserve_nothing_and_keep_their_storage_alive(chip):
    x = accel.from_numpy(np.arange(12, dtype=np.float32), backend=chip)
    used = chip.memory.in_use
    v = ops.reshape(x, (3, 4))
    s = v[1:, :2]
    assert chip.memory.in_use == used and v.data.is_view and s.data.is_view
    del x, v
    gc.collect()
    assert chip.memory.in_use == used, "the view still holds the storage"
    np.testing.assert_array_equal(s.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4)[1:, :2])
    del s
    gc.collect()
    assert chip.memory.in_use == used - 48


def test_host_device_copies_are_explicit_and_counted_in_bytes(chip):
    before = chip.counters()
    host = np.arange(10, dtype=np.float32)
    x = accel.from_numpy(host, backend=chip)
    host[0] = 99.0                       # the device holds its own copy
    back = x.numpy()
    after = chip.counters()
    assert after["h2d_bytes"] - before["h2d_bytes"] == 40
    assert after["d2h_bytes"] - before["d2h_bytes"] == 40
    assert back[0] == 0.0
    with pytest.raises(accel.OpError, match="implicit host copy"):
        np.asarray(x.data)               # only counted transfers read device memory


def test_in_place_kv_cache_update_writes_device_memory_without_allocating(chip):
    cache = ops.zeros((1, 2, 8, 4), accel.float32, chip)
    used = chip.memory.in_use
    values = accel.from_numpy(np.ones((1, 2, 2, 4), np.float32), backend=chip)
    index = accel.tensor([3, 5], backend=chip)
    cache.index_copy_(2, index, values)
    expected = np.zeros((1, 2, 8, 4), np.float32)
    expected[:, :, [3, 5]] = 1.0
    np.testing.assert_array_equal(cache.numpy(), expected)
    assert chip.memory.in_use == used + values.nbytes + index.nbytes, "the update allocated nothing"
