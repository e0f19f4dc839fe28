"""A static, preallocated key/value cache (gpt-fast style).

Every layer owns k and v of shape (B, Hkv, max_seq, D), allocated once. Slot s holds the token at
position s, so writing is an in-place `index_copy_` at the positions tensor and reading is the
whole buffer, masked by position: a decode step has the same shapes at every position and
compiles once. Slots beyond the current position hold stale or zero values that the mask hides.
"""
from __future__ import annotations

from accel import ops
from accel.core.dtypes import DType, int64
from accel.core.errors import ModelError
from accel.core.tensor import Tensor


class KVCache:
    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_seq: int, head_dim: int,
                 dtype: DType, backend):
        if max_seq < 1 or batch < 1:
            raise ModelError(f"a KV cache needs batch >= 1 and max_seq >= 1, got batch {batch}, "
                             f"max_seq {max_seq}", hint="pass positive sizes")
        shape = (batch, num_kv_heads, max_seq, head_dim)
        self.batch, self.max_seq, self.dtype = batch, max_seq, dtype
        self.k = [ops.zeros(shape, dtype, backend) for _ in range(num_layers)]  # (B, Hkv, S, D)
        self.v = [ops.zeros(shape, dtype, backend) for _ in range(num_layers)]
        self.positions = ops.arange(max_seq, dtype=int64, backend=backend)       # (S,) slot s = position s

    @classmethod
    def for_config(cls, config, batch: int, max_seq: int, dtype: DType, backend) -> "KVCache":
        return cls(config.num_hidden_layers, batch, config.num_key_value_heads, max_seq,
                   config.head_dim, dtype, backend)

    def update(self, layer: int, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, Hkv, T, D) at `positions` (T,); return the layer's whole (B, Hkv, S, D) buffers."""
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return self.k[layer], self.v[layer]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.k) + sum(t.nbytes for t in self.v)
