"""The torch attention kernel's static-KV-cache path: a causal mask over a key prefix is recognised
on the CPU and run as SDPA over that prefix (is_causal, or no mask), and must give what the numpy
float64 reference gives for the full mask; any other mask takes the general path. bfloat16 runs
natively on the CPU (float16 still through float32): judged with the conformance thresholds."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accel  # noqa: E402
from accel.core import dtypes as dt  # noqa: E402
from accel import ops  # noqa: E402
from accel.backends.torch import attention as torch_attention  # noqa: E402
from accel.conformance.judge import judge  # noqa: E402
from accel.conformance.tolerances import tolerance_for  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402




def cache_mask(t: int, s: int, start: int) -> np.ndarray:
    """What the Llama model builds over a static cache: position start+i sees slots j <= start+i."""
    return np.arange(start, start + t)[:, None] >= np.arange(s)[None, :]


def run(tb, dtype, q, k, v, mask, **attrs):
    args = [accel.from_numpy(a.astype(dtype.numpy) if a.dtype != bool else a, backend=tb) for a in (q, k, v)]
    args.append(None if mask is None else accel.from_numpy(mask, backend=tb))
    return ops.attention(*args, **attrs).numpy()


def reference(dtype, q, k, v, mask, **attrs):
    rounded = [a.astype(dtype.numpy).astype(np.float64) for a in (q, k, v)]
    return ops.attention.reference(*rounded, mask, **attrs)


def verdict(got, dtype, q, k, v, mask, **attrs):
    """The conformance suite's own judgement of `got` against the float64 reference."""
    return judge(got, reference(dtype, q, k, v, mask, **attrs), dtype, tolerance_for(ops.attention, dtype.name))


def qkv(b, hq, hk, t, s, d, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, hq, t, d)), rng.standard_normal((b, hk, s, d)), rng.standard_normal((b, hk, s, d))


# (B, Hq, Hkv, T, S, start): prefill from 0 (is_causal), decode steps, a chunk after a prefix
CACHE_CASES = [(1, 4, 2, 7, 12, 0), (2, 4, 2, 1, 12, 5), (1, 2, 2, 1, 9, 0), (1, 2, 2, 1, 9, 8),
               (2, 4, 1, 3, 16, 6), (1, 2, 1, 16, 16, 0)]


@pytest.mark.parametrize("case", CACHE_CASES, ids=lambda c: "b{}-hq{}-hk{}-t{}-s{}-start{}".format(*c))
@pytest.mark.parametrize("dtype", [dt.float32, dt.bfloat16, dt.float16], ids=lambda d: d.name)
@pytest.mark.parametrize("mask_rank", [2, 4])
def test_static_cache_mask_matches_the_reference(tb, case, dtype, mask_rank):
    b, hq, hk, t, s, start = case
    q, k, v = qkv(b, hq, hk, t, s, 16, seed=sum(case))
    mask = cache_mask(t, s, start)
    if mask_rank == 4:
        mask = mask.reshape(1, 1, t, s)
    assert torch_attention.causal_prefix(torch.from_numpy(mask), t, s) == start + t  # the fast path runs
    got = run(tb, dtype, q, k, v, mask)
    result = verdict(got, dtype, q, k, v, mask)
    assert result.passed, result


@pytest.mark.parametrize("dtype", [dt.float32, dt.bfloat16])
def test_fast_path_equals_the_general_path(tb, dtype):
    # Same kernel, the keys beyond the prefix dropped instead of masked: equal up to float rounding.
    q, k, v = qkv(1, 4, 2, 5, 11, 8, seed=3)
    mask = cache_mask(5, 11, 2)
    fast = run(tb, dtype, q, k, v, mask)
    general = run(tb, dtype, q, k, v, mask.reshape(1, 5, 11).repeat(1, 0))  # (B, T, S): not recognised
    np.testing.assert_allclose(fast.astype(np.float64), general.astype(np.float64), rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize("mask", [
    np.array([[True, False, True, False]]),                      # a hole: not a prefix
    np.array([[False, False, False, False]]),                    # nothing visible: zeros
    cache_mask(3, 6, 0)[::-1].copy(),                            # rows out of order
    np.tril(np.ones((3, 6), bool), 1) & ~np.eye(3, 6, 0, bool),  # causal-looking but not
    cache_mask(4, 6, -2),                                        # the first rows see nothing
], ids=["hole", "empty", "reversed", "diagonal-missing", "early-rows-empty"])
def test_other_masks_take_the_general_path(tb, mask):
    t, s = mask.shape
    assert torch_attention.causal_prefix(torch.from_numpy(mask), t, s) is None
    q, k, v = qkv(1, 2, 1, t, s, 8, seed=t * s)
    got = run(tb, dt.float32, q, k, v, mask)
    result = verdict(got, dt.float32, q, k, v, mask)
    assert result.passed, result
    empty_rows = ~mask.any(-1)
    assert np.all(got[..., empty_rows, :] == 0.0)  # the declaration: a fully masked row gives zeros


def test_per_batch_masks_are_not_taken_for_a_prefix(tb):
    mask = np.stack([cache_mask(2, 5, 1), cache_mask(2, 5, 0)])[:, None]  # (B=2, 1, T, S), rows differ
    assert torch_attention.causal_prefix(torch.from_numpy(mask), 2, 5) is None
    q, k, v = qkv(2, 2, 2, 2, 5, 8, seed=9)
    got = run(tb, dt.float32, q, k, v, mask)
    assert verdict(got, dt.float32, q, k, v, mask).passed


class _SdpaDtypes(TorchDispatchMode):
    """Records the query dtype of every SDPA kernel torch runs (the real kernels run)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.name():
            self.seen.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def test_bfloat16_runs_without_a_float32_copy_and_float16_with_one(tb):
    q, k, v = qkv(1, 2, 2, 3, 3, 8, seed=1)
    with _SdpaDtypes() as bf16:
        run(tb, dt.bfloat16, q, k, v, None, causal=True)
    with _SdpaDtypes() as f16:
        run(tb, dt.float16, q, k, v, None, causal=True)
    assert set(bf16.seen) == {torch.bfloat16} and set(f16.seen) == {torch.float32}
