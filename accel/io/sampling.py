"""Choosing the next token from logits: greedy on the device, sampling on the host.

Sampling copies one row of logits per sequence to the host and draws from numpy's Philox
generator keyed by the seed, so the same seed gives the same text on every backend (as long as
the backends' logits agree). The filters follow Hugging Face's order: temperature, top-k, top-p.
"""
from __future__ import annotations

import math
import secrets

import numpy as np

from accel import ops
from accel.core.errors import OpError
from accel.core.tensor import Tensor


INVALID_LOGITS_HINT = ("the model produced invalid logits: check the weights for NaN/inf and the "
                      "dtype (float16 overflows where bfloat16 or float32 does not)")


class Sampler:
    """`sampler(logits)` -> one token id per row of `logits` (B, V)."""

    def __init__(self, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None):
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise OpError(f"temperature must be a finite number >= 0, got {temperature!r}",
                          hint="0 means greedy decoding; 0.7 is a common sampling temperature")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise OpError(f"seed must be an integer >= 0 or None, got {seed!r}",
                          hint="e.g. seed=0; None draws a fresh seed (kept on the sampler)")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise OpError(f"top_k must be a positive integer or None, got {top_k!r}", hint="e.g. top_k=50")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise OpError(f"top_p must lie in (0, 1], got {top_p!r}", hint="e.g. top_p=0.9")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        # Without a seed sampling is fresh each run; the seed drawn is kept so a run can be repeated.
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        self.rng = np.random.Generator(np.random.Philox(self.seed))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def __call__(self, logits: Tensor) -> list[int]:
        if logits.ndim != 2:
            raise OpError(f"the sampler takes logits of shape (batch, vocab), got {list(logits.shape)}",
                          hint="pass the last position's logits, e.g. logits[:, -1]")
        if self.greedy:
            # argmax of a NaN row is an arbitrary id (token 0 on most libraries, every step):
            # the row's max, NaN or -inf when the row is, is checked on the host with it.
            for row, top in enumerate(ops.max(logits, -1).tolist()):
                if top != top or top == float("-inf"):
                    raise OpError(f"greedy decoding: the logits of row {row} are "
                                  f"{'NaN' if top != top else 'all -inf'} (vocab {logits.shape[1]})",
                                  hint=INVALID_LOGITS_HINT)
            return [int(i) for i in ops.argmax(logits, -1).tolist()]
        host = np.asarray(logits.numpy(), dtype=np.float64)
        return [self.sample_row(row) for row in host]

    def distribution(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, probabilities) that survive temperature, top-k and top-p, likeliest first."""
        row = np.asarray(row, dtype=np.float64)
        if np.isnan(row).any() or not np.isfinite(row).any():
            raise OpError(f"cannot sample from logits with NaN or no finite entry (vocab {row.size})",
                          hint=INVALID_LOGITS_HINT)
        order = np.argsort(-row, kind="stable")          # most likely first, ties by token id
        scaled = row[order] / self.temperature
        if self.top_k is not None:
            order, scaled = order[: self.top_k], scaled[: self.top_k]
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if self.top_p is not None:
            before = np.cumsum(probs) - probs            # mass of the tokens ranked above
            keep = max(int(np.sum(before < self.top_p)), 1)
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        keep = probs > 0                                  # -inf logits never get picked
        return order[keep], probs[keep]

    def sample_row(self, row: np.ndarray) -> int:
        ids, probs = self.distribution(row)
        cdf = np.cumsum(probs)
        pick = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return int(ids[min(pick, len(ids) - 1)])
