"""Errors of the training loop. Both derive from `accel.AccelError`, so the CLI prints them as
one line with a hint and exits non-zero."""
from __future__ import annotations

from accel.core.errors import AccelError


class TrainConfigError(AccelError):
    """A training option is invalid, or a batch plan cannot be kept on this many ranks; the
    message names the option and the values that would work."""


class DivergenceError(AccelError):
    """Training produced a non-finite loss, weight or optimizer moment, or a loss spike stopped
    the run; no checkpoint holds the bad values."""
