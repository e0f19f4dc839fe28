"""The training section's embedding-gradient rows: both forms give the scatter-add of the
incoming rows, checked against numpy float64 (np.add.at), and the intermediates are counted."""
import numpy as np
import pytest

import accel
from accel.bench.scatter import FORMS, intermediate_bytes, onehot_grad, scatter_grad


@pytest.mark.parametrize("form", [onehot_grad, scatter_grad], ids=FORMS)
def test_both_forms_sum_rows_that_share_an_id(form, backend):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((40, 8)).astype(np.float32)
    ids = rng.integers(0, 11, 40)          # 40 tokens over 11 rows: many repeats
    want = np.zeros((11, 8))
    np.add.at(want, ids, g.astype(np.float64))
    got = form(accel.from_numpy(g, backend), accel.from_numpy(ids, backend), 11)
    np.testing.assert_allclose(np.asarray(got.numpy(), np.float64), want, rtol=1e-5, atol=1e-5)


def test_only_the_one_hot_form_allocates_tokens_times_vocab():
    assert intermediate_bytes(FORMS[0], 8192, 128_000) == 8192 * 128_000 * 5  # bool + float32
    assert intermediate_bytes(FORMS[1], 8192, 128_000) == 0


def test_the_embedding_gradient_is_one_index_add_without_a_one_hot(backend):
    from accel import ops

    vocab, tokens = 1000, 6
    weight = accel.from_numpy(np.ones((vocab, 4), np.float32), backend)
    ids = accel.from_numpy(np.array([[3, 7, 3], [999, 0, 3]]), backend)
    grads_of = accel.value_and_grad(lambda w, i: ops.sum(ops.embedding(w, i)))
    graph = accel.compile(grads_of).graph_for(weight, ids, lowered=False)
    assert graph.op_counts().get("index_add") == 1
    assert all(tokens * vocab > _size(node.spec.shape) for node in graph.nodes)  # no (tokens, vocab) tensor
    _, grad = grads_of(weight, ids)
    want = np.zeros((vocab, 4))
    np.add.at(want, [3, 7, 3, 999, 0, 3], 1.0)
    np.testing.assert_array_equal(np.asarray(grad.numpy(), np.float64), want)


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n
