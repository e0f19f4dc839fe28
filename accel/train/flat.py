"""Parameters as one flat vector (fixed name order), for collectives that move many tensors at
once: ZeRO's reduce-scatter / all-gather and the fixed-order gradient reduction."""
from __future__ import annotations

import math
from dataclasses import dataclass

from accel import ops
from accel.core.tensor import Tensor


@dataclass(frozen=True)
class FlatLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    parts: int = 1                       # the vector is padded to a multiple of this

    @classmethod
    def of(cls, params: dict[str, Tensor], parts: int = 1) -> "FlatLayout":
        names = tuple(sorted(params))
        return cls(names, tuple(tuple(params[n].shape) for n in names), parts)

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def padded(self) -> int:
        return -(-self.size // self.parts) * self.parts

    @property
    def shard(self) -> int:
        return self.padded // self.parts

    def offsets(self) -> list[tuple[str, int, int, tuple[int, ...]]]:
        out, at = [], 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out.append((name, at, at + n, shape))
            at += n
        return out

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        pieces = [ops.reshape(tensors[n], (-1,)) for n in self.names]
        if self.padded > self.size:
            first = pieces[0]
            pieces.append(ops.zeros((self.padded - self.size,), first.dtype, first.backend))
        return ops.concat(pieces, axis=0)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return {name: ops.reshape(ops.slice(flat, axes=(0,), starts=(a,), stops=(b,)), shape)
                for name, a, b, shape in self.offsets()}

    def shard_of(self, flat: Tensor, index: int) -> Tensor:
        return ops.slice(flat, axes=(0,), starts=(index * self.shard,), stops=((index + 1) * self.shard,))
