"""The error hierarchy. Every error accel raises derives from `AccelError`.

A message names what was being done (op, backend, shapes, dtypes) and ends with a `HINT:` line
that says what to do about it, in the spirit of llm.c's error macros.
"""
from __future__ import annotations


class AccelError(Exception):
    """Base class of every error raised by accel."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHINT: {hint}")


class BackendError(AccelError):
    """A backend name is unknown, not installed, or failed to load."""


class DeviceError(AccelError):
    """The device failed while running an op (real or injected fault)."""


class OutOfMemoryError(DeviceError):
    """The device has not enough free memory for an allocation."""


class OpError(AccelError):
    """An op was called with arguments its declaration rejects, or its kernel failed."""


class ShapeError(OpError):
    """Input shapes are not compatible for this op."""


class DTypeError(OpError):
    """Input dtypes are not accepted by this op (or not by this backend)."""


class IndexOutOfRangeError(OpError):
    """An index value (gather, embedding, index_copy, a cross_entropy target) lies outside
    [0, size): accel ops never wrap negative indices and never drop or clamp a bad one."""


class UnsupportedError(OpError):
    """The backend cannot run the op natively and strict mode forbids falling back."""


class ModelError(AccelError):
    """A model directory, config, checkpoint or tokenizer is missing or inconsistent."""


class DistributedError(AccelError):
    """A multi-process job is misconfigured: ranks disagree, no collective path, bad launch."""


class CollectiveError(DistributedError):
    """A collective failed or timed out; the message names the op and the ranks involved."""
