"""accel.Tensor: a thin wrapper over a backend's native array.

Wrapping stays cheap (two slot stores); shape and dtype are read from the native array on
demand. Operators route through `accel.ops`, so they dispatch like any other op call.
"""
from __future__ import annotations

import numbers

import numpy as np

from accel.core.dtypes import DType, as_dtype
from accel.core.errors import OpError


class Tensor:
    __slots__ = ("data", "backend", "requires_grad", "grad", "_node", "__weakref__")

    def __init__(self, data, backend):
        self.data = data          # the backend's native array (numpy, torch, jax, ...)
        self.backend = backend    # the Backend instance that owns `data`
        self.requires_grad = False
        self.grad = None
        self._node = None         # autograd tape entry, set by accel.autodiff.autograd

    # --- facts -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> DType:
        return self.backend.dtype_of(self.data)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.data.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    # --- host transfer ---------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        return self.backend.to_numpy(self.data)

    def __dlpack__(self, **kwargs):  # the native array's own DLPack export (torch, jax, numpy)
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def item(self):
        if self.size != 1:
            raise OpError(f"item() needs a tensor with one element, got shape {self.shape}",
                          hint="index or reduce the tensor first")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, backend) -> "Tensor":
        """Copy to another backend (or device), through host memory."""
        from accel.core.registry import get_backend

        target = get_backend(backend)
        if target is self.backend:
            return self
        return Tensor(target.from_numpy(self.numpy()), target)

    def astype(self, dtype) -> "Tensor":
        dtype = as_dtype(dtype)
        return self if dtype is self.dtype else _ops.cast(self, dtype)

    def __repr__(self) -> str:
        try:
            body = np.array2string(np.asarray(self.numpy(), dtype=np.float64)
                                   if self.dtype.is_floating else self.numpy(),
                                   precision=4, threshold=20, edgeitems=2)
        except Exception:  # repr must never raise
            body = "..."
        return f"accel.Tensor({body}, dtype={self.dtype.name}, backend={self.backend.spec})"

    def __len__(self) -> int:
        if not self.data.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    __hash__ = object.__hash__

    # --- shape helpers ---------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def permute(self, *axes) -> "Tensor":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.permute(self, axes)

    def transpose(self, a: int = -2, b: int = -1) -> "Tensor":
        return _ops.transpose(self, a, b)

    @property
    def T(self) -> "Tensor":
        return _ops.permute(self, tuple(reversed(range(self.ndim))))

    def sum(self, axis=None, keepdims=False):
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops.max(self, axis, keepdims)

    def argmax(self, axis=-1, keepdims=False):
        return _ops.argmax(self, axis, keepdims)

    def __getitem__(self, key) -> "Tensor":
        return _ops.getitem(self, key)

    def index_copy_(self, axis: int, index: "Tensor", values: "Tensor") -> "Tensor":
        """In place: self[..., index, ...] = values along `axis` (used by the static KV cache).

        Backends with mutable arrays write in place; others compute the functional update and
        this wrapper takes the new array, so callers see the same semantics everywhere.
        """
        return _ops.index_copy_inplace(self, index, values, axis)

    # --- arithmetic ------------------------------------------------------------------------
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.neg(self)
    def __abs__(self): return _ops.abs(self)
    def __lt__(self, other): return _ops.lt(self, other)
    def __le__(self, other): return _ops.le(self, other)
    def __gt__(self, other): return _ops.gt(self, other)
    def __ge__(self, other): return _ops.ge(self, other)
    def __invert__(self): return _ops.logical_not(self)

    # `==` stays identity-based (tensors are dict keys in autograd); use accel.ops.eq.
    def eq(self, other): return _ops.eq(self, other)


def is_scalar(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, Tensor)


from accel import ops as _ops  # noqa: E402  (operators dispatch through the op layer)
