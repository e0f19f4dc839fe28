"""Bad values and shapes never give a silent wrong answer: every backend (`pytest --backend NAME`),
in plain eager mode and in checked mode, refuses them with an AccelError naming what is wrong.

Index values are checked by the kernels themselves (accel.core.bounds; docs/porting.md); the
structural rule of a composite op runs in eager mode too, so a fused kernel cannot accept what
the declaration refuses."""
import numpy as np
import pytest

import accel
from accel import ops


@pytest.fixture(params=["eager", "checked"])
def mode(request):
    accel.set_checked(request.param == "checked")
    yield request.param
    accel.set_checked(False)


def f32(backend, *shape, seed=0):
    return accel.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), backend)


def ints(backend, values, dtype=np.int64):
    return accel.from_numpy(np.array(values, dtype), backend)


def words(error, *needles):
    text = str(error.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in message:\n{text}"
    assert "\nHINT: " in text, text


# --- index values -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1, 4, 99])
def test_gather_refuses_an_index_outside_the_axis(backend, mode, bad):
    x = f32(backend, 4, 3)
    with pytest.raises(accel.IndexOutOfRangeError) as error:
        ops.gather(x, ints(backend, [0, bad]), 0)
    words(error, "gather", f"index {bad} is out of range [0, 4)", backend.spec)


@pytest.mark.parametrize("bad", [-1, 6])
def test_embedding_refuses_a_token_id_outside_the_vocab(backend, mode, bad):
    table = f32(backend, 6, 3)
    with pytest.raises(accel.IndexOutOfRangeError) as error:
        ops.embedding(table, ints(backend, [[1, bad]], np.int32))
    words(error, f"index {bad} is out of range [0, 6)", "vocab_size", backend.spec)


@pytest.mark.parametrize("bad", [-1, 5])
def test_index_copy_refuses_and_writes_nothing(backend, mode, bad):
    x = f32(backend, 5, 2)
    before = x.numpy().copy()
    values = f32(backend, 2, 2, seed=1)
    with pytest.raises(accel.IndexOutOfRangeError) as error:
        ops.index_copy(x, ints(backend, [1, bad]), values, 0)
    words(error, "index_copy", f"index {bad} is out of range [0, 5)")
    with pytest.raises(accel.IndexOutOfRangeError):
        x.index_copy_(0, ints(backend, [1, bad]), values)  # the KV cache's in-place write
    np.testing.assert_array_equal(x.numpy(), before)  # no partial update either


@pytest.mark.parametrize("targets", [[0, 1, 5], [0, -1, 2], [3, 99, 0]])
def test_cross_entropy_refuses_a_target_outside_the_classes(backend, mode, targets):
    logits = f32(backend, 3, 4)
    with pytest.raises(accel.IndexOutOfRangeError) as error:
        ops.cross_entropy(logits, ints(backend, targets))
    bad = next(t for t in targets if not 0 <= t < 4)
    words(error, "cross_entropy", f"{bad} is out of range [0, 4)", "ignore_index", backend.spec)


def test_cross_entropy_ignore_index_still_works(backend, mode):
    logits = f32(backend, 3, 4)
    host = logits.numpy().astype(np.float64)
    logp = host - host.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    want = -(logp[0, 2] + logp[2, 1]) / 2  # numpy float64, row 1 ignored
    for ignore in (-100, -1, 7):
        got = ops.cross_entropy(logits, ints(backend, [2, ignore, 1]), ignore_index=ignore)
        np.testing.assert_allclose(float(got.numpy()), want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_refuses_float_indices(backend, mode, dtype):
    with pytest.raises(accel.DTypeError) as error:
        ops.gather(f32(backend, 4, 3), ints(backend, [1.7], dtype), 0)
    words(error, "gather", "indices must be int32 or int64", "cast")


def test_index_copy_refuses_float_index(backend, mode):
    with pytest.raises(accel.DTypeError) as error:
        ops.index_copy(f32(backend, 4, 3), ints(backend, [1.0], np.float32), f32(backend, 1, 3), 0)
    words(error, "index_copy", "index must be int32 or int64")


# --- structural rules of composite ops, eager included ---------------------------------------------
def test_attention_refuses_a_float_mask(backend, mode):
    q = f32(backend, 1, 2, 3, 4)
    with pytest.raises(accel.DTypeError) as error:
        ops.attention(q, q, q, f32(backend, 3, 3))
    words(error, "attention", "mask must be bool", backend.spec)


def test_attention_refuses_k_and_v_of_other_lengths(backend, mode):
    with pytest.raises(accel.ShapeError) as error:
        ops.attention(f32(backend, 1, 2, 3, 4), f32(backend, 1, 2, 3, 4), f32(backend, 1, 2, 5, 4))
    words(error, "attention", "k [1, 2, 3, 4], v [1, 2, 5, 4] do not match")


def test_attention_refuses_zero_kv_heads(backend, mode):
    k = f32(backend, 1, 0, 3, 4)
    with pytest.raises(accel.ShapeError) as error:
        ops.attention(f32(backend, 1, 2, 3, 4), k, k)
    words(error, "attention", "not a multiple of 0 key/value heads")


def test_attention_refuses_to_broadcast_a_batch_1_key(backend, mode):
    kv = f32(backend, 1, 2, 3, 4)
    with pytest.raises(accel.ShapeError) as error:
        ops.attention(f32(backend, 2, 2, 3, 4), kv, kv)
    words(error, "attention", "q [2, 2, 3, 4], k [1, 2, 3, 4]", "share B")


def test_rope_refuses_an_odd_head_dim(backend, mode):
    with pytest.raises(accel.ShapeError) as error:
        ops.rope(f32(backend, 1, 2, 3, 5), f32(backend, 3, 5), f32(backend, 3, 5))
    words(error, "rope", "even last dim", "[1, 2, 3, 5]")


def test_rope_refuses_tables_that_change_the_output_shape(backend, mode):
    table = f32(backend, 2, 1, 3, 4)
    with pytest.raises(accel.ShapeError) as error:
        ops.rope(f32(backend, 1, 2, 3, 4), table, table)
    words(error, "rope", "do not broadcast to x [1, 2, 3, 4]")


@pytest.mark.parametrize("call, needle", [
    (lambda b: ops.linear(f32(b, 2, 3), f32(b, 4, 5)), "does not fit weight [4, 5]"),
    (lambda b: ops.rms_norm(f32(b, 2, 3), f32(b, 4)), "weight shape [4] must be [3]"),
    (lambda b: ops.layer_norm(f32(b, 2, 3), f32(b, 3), f32(b, 2)), "bias shape [2] must be [3]"),
    (lambda b: ops.cross_entropy(f32(b, 3, 4), ints(b, [0, 1])), "targets [2] must equal logits [3, 4]"),
    (lambda b: ops.embedding(f32(b, 4), ints(b, [0])), "embedding weight must be (vocab, dim)"),
    (lambda b: ops.softmax(f32(b, 2, 3), 2), "axis 2 is out of range"),
])
def test_composite_shape_rules_hold_in_eager_mode(backend, mode, call, needle):
    with pytest.raises(accel.ShapeError) as error:
        call(backend)
    words(error, needle, backend.spec)


def test_sum_refuses_a_fractional_axis(backend, mode):
    with pytest.raises(accel.ShapeError) as error:
        ops.sum(f32(backend, 4, 3), axis=1.5)
    words(error, "sum", "axis must be an int, a tuple of ints or None, got 1.5")
