"""A DeviceError raised inside a kernel reaches the caller as a DeviceError (the call prefixed to
its message), so code that catches DeviceError to retry sees it: here an injected fault while the
KV cache is written with the in-place index_copy_ during generate."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.models import LlamaConfig, LlamaModel

CONFIG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def launches_of(chip, run) -> list[str]:
    """What each kernel launch of `run()` was, in order (read from the chip's fault checks)."""
    seen, check = [], chip.faults.check
    chip.faults.check = lambda what: (seen.append(what), check(what))[1]
    try:
        run()
    finally:
        del chip.faults.check
    return seen


def test_fault_in_the_kv_cache_write_arrives_as_device_error(ascend):
    model = LlamaModel.random(CONFIG, seed=0, backend=ascend)
    prompt = [5, 9, 2, 7]
    want = model.generate(prompt, 3)
    launches = launches_of(ascend, lambda: model.generate(prompt, 3))
    first_write = next(i for i, what in enumerate(launches) if what.startswith("index_copy_"))
    ascend.configure(fault_at=first_write + 1)
    with pytest.raises(accel.DeviceError) as error:
        model.generate(prompt, 3)
    text = str(error.value)
    assert "index_copy" in text and "device fault (injected)" in text and "HINT" in text
    ascend.configure(fault_at=None)
    assert model.generate(prompt, 3) == want  # a retry after the fault gives the same tokens


@pytest.mark.parametrize("inplace", [True, False])
def test_fault_in_index_copy_keeps_its_class(ascend, inplace):
    x = accel.from_numpy(np.zeros((4, 3), np.float32), ascend)
    index = accel.from_numpy(np.array([1], np.int64), ascend)
    values = accel.from_numpy(np.ones((1, 3), np.float32), ascend)
    ascend.configure(fault_at=1)
    with pytest.raises(accel.DeviceError) as error:
        if inplace:
            x.index_copy_(0, index, values)
        else:
            ops.index_copy(x, index, values, 0)
    assert type(error.value) is accel.DeviceError
    assert str(error.value).startswith("index_copy(float32[4, 3], int64[1], float32[1, 3]) on npusim")
