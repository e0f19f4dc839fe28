"""Catching divergence before it reaches a checkpoint: a loss spike against the running average,
and non-finite values in what is about to be saved."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from accel.train.errors import DivergenceError

SPIKE_ACTIONS = ("warn", "skip", "stop")


@dataclass
class SpikeGuard:
    """A loss above `factor` × the exponential moving average of the accepted losses (after
    `warmup` steps) is a spike. `action`: warn and keep the step, skip it (no update, the
    average untouched), or stop the run with an error. factor 0 turns the check off."""

    factor: float = 3.0
    action: str = "warn"
    warmup: int = 10
    decay: float = 0.9
    average: float | None = None
    seen: int = 0

    def check(self, step: int, loss: float) -> str | None:
        """None if the step is fine, else the message; raises in 'stop' mode and on NaN/inf."""
        if not math.isfinite(loss):
            raise DivergenceError(f"training diverged at step {step}: the loss is {loss}",
                                  hint="lower --lr, raise --warmup or --grad-clip, or resume from an "
                                       "earlier checkpoint (the newest ones are kept)")
        spiked = (self.factor > 0 and self.seen >= self.warmup and self.average is not None
                  and loss > self.factor * self.average)
        if not spiked:
            self.average = loss if self.average is None else self.decay * self.average + (1 - self.decay) * loss
            self.seen += 1
            return None
        message = (f"loss spike at step {step}: {loss:.4g} is {loss / self.average:.1f}× the running "
                   f"average {self.average:.4g}")
        if self.action == "stop":
            raise DivergenceError(message + "; stopping (--on-spike stop)",
                                  hint="resume from the last checkpoint with a lower --lr, or pass "
                                       "--on-spike skip")
        if self.action == "warn":   # the step is kept, and so is its loss in the average
            self.average = self.decay * self.average + (1 - self.decay) * loss
            self.seen += 1
        return message + ("; step skipped" if self.action == "skip" else "")

    def to_dict(self) -> dict:
        return {"average": self.average, "seen": self.seen}


def check_finite(step: int, what: str, arrays: dict[str, np.ndarray]) -> None:
    """Refuse to save NaN/inf: a checkpoint that cannot be resumed is worse than none."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise DivergenceError(
                f"not saving checkpoint at step {step}: {what} {name!r} has {bad} non-finite values",
                hint="training diverged; resume from the newest kept checkpoint with a lower --lr")
