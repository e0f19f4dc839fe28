"""Simulated device memory: a capacity, a ledger of what is allocated, and the native array type.

`DeviceArray` is npusim's native array: a numpy array standing in for device memory plus its
accounting. An array that owns its storage reserves its bytes on creation and gives them back
when it dies (a weakref finalizer on the handle, so `del tensor` frees device memory as it would
on a real device). A view (reshape, permute, slice, broadcast) reserves nothing and keeps the
array it looks into alive.
"""
from __future__ import annotations

import operator
import weakref

import numpy as np

from accel.core.errors import OutOfMemoryError


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class DeviceMemory:
    """Bytes in use on one simulated device, with its capacity and high-water mark."""

    def __init__(self, capacity: int, device: str):
        self.capacity = int(capacity)
        self.device = device
        self.in_use = 0
        self.peak = 0
        self.allocations = 0

    @property
    def free(self) -> int:
        return self.capacity - self.in_use

    def reserve(self, nbytes: int, what: str) -> None:
        if nbytes > self.capacity - self.in_use:
            raise OutOfMemoryError(
                f"{self.device}: out of device memory allocating {format_bytes(nbytes)} for {what}: "
                f"{format_bytes(self.in_use)} of {format_bytes(self.capacity)} in use, "
                f"{format_bytes(self.free)} free (requested {nbytes} bytes, free {self.free} bytes)",
                hint="free tensors you no longer need (del), use a smaller batch or sequence, "
                     "or give the device more memory: backend.configure(memory_capacity='16GiB') "
                     "or ACCEL_NPUSIM_MEMORY=16GiB")
        self.in_use += nbytes
        self.allocations += 1
        if self.in_use > self.peak:
            self.peak = self.in_use

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes


def _array_fact(name: str) -> property:
    """A read-only property forwarding to the same attribute of the numpy array `self.array`."""
    return property(operator.attrgetter(f"array.{name}"), doc=f"The numpy array's `{name}`.")


class DeviceArray:
    """A tensor's storage on the simulated device (numpy underneath, accounted in DeviceMemory)."""

    __slots__ = ("array", "owner", "__weakref__")

    def __init__(self, array: np.ndarray, memory: DeviceMemory | None, what: str = "a tensor",
                 owner: "DeviceArray | None" = None):
        self.array = array
        self.owner = owner        # the array whose storage this view shares (kept alive)
        if owner is None and memory is not None:
            nbytes = array.nbytes
            memory.reserve(nbytes, what)
            weakref.finalize(self, memory.release, nbytes)

    # the facts accel.Tensor reads from a native array, read from the numpy array underneath
    shape = _array_fact("shape")
    dtype = _array_fact("dtype")
    ndim = _array_fact("ndim")
    size = _array_fact("size")
    nbytes = _array_fact("nbytes")

    @property
    def is_view(self) -> bool:
        return self.owner is not None

    def __repr__(self) -> str:
        return f"DeviceArray({self.array.dtype}{list(self.array.shape)}{', view' if self.owner else ''})"

    def __array__(self, dtype=None, copy=None):
        # Reading device memory from the host is a transfer; it must go through the backend so
        # it is counted (tensor.numpy()), never happen behind numpy's back.
        from accel.core.errors import OpError

        raise OpError(f"implicit host copy of npusim device memory ({self!r})",
                      hint="call tensor.numpy() (or backend.to_numpy(native)), which counts the transfer")
