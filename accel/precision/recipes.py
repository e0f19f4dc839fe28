"""FP8 scaling recipes: which blocks share a scale, where the scale comes from, which formats.

    tensorwise_delayed  one scale per tensor from an amax history (Transformer Engine
                        `DelayedScaling`: history length, max or most-recent, margin);
                        e4m3fn forward, e5m2 gradients (TE's HYBRID format)
    tensorwise_current  one scale per tensor from this call's amax (TE `Float8CurrentScaling`,
                        torchao tensorwise); e4m3fn forward, e5m2 gradients
    rowwise             one scale per token (activations) / per output channel (weights), current
                        amax, e4m3fn throughout (torchao rowwise)
    blockwise           1×128 activation and gradient tiles, 128×128 weight blocks, float32
                        accumulation, e4m3fn throughout (DeepSeek-V3)

`Recipe` is a frozen dataclass; `get_recipe(name)` returns a named one and refuses unknown names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from accel.core import dtypes as dt
from accel.core.errors import AccelError


class PrecisionError(AccelError):
    """An FP8 recipe, policy or state is unknown, malformed, or does not fit the model."""


@dataclass(frozen=True)
class Recipe:
    name: str
    granularity: str                 # "tensor", "row" or "block" (see accel.ops.fp8.gemm_blocks)
    scaling: str                     # "delayed" (amax history) or "current" (this call's amax)
    forward_dtype: dt.DType = dt.float8_e4m3fn   # activations and weights
    grad_dtype: dt.DType = dt.float8_e5m2        # gradients in the backward GEMMs
    history_len: int = 16            # delayed: how many steps of amax are kept
    amax_compute: str = "max"        # delayed: "max" over the history or "most_recent"
    margin: int = 0                  # scales leave 2^margin of headroom under the format's max
    block: int = 128                 # blockwise tile/block side

    def __post_init__(self):
        if self.granularity not in ("tensor", "row", "block"):
            raise PrecisionError(f"recipe {self.name!r}: unknown granularity {self.granularity!r}",
                                 hint="use tensor, row or block")
        if self.scaling not in ("delayed", "current") or (self.scaling == "delayed" and self.granularity != "tensor"):
            raise PrecisionError(f"recipe {self.name!r}: scaling {self.scaling!r} with {self.granularity}-wise blocks",
                                 hint="delayed scaling is tensor-wise only; row/block recipes use current scaling")
        if self.amax_compute not in ("max", "most_recent"):
            raise PrecisionError(f"recipe {self.name!r}: amax_compute must be max or most_recent, "
                                 f"got {self.amax_compute!r}", hint="TE's DelayedScaling offers the same two")
        if self.history_len < 1 or self.margin < 0 or self.block < 1:
            raise PrecisionError(f"recipe {self.name!r}: history_len >= 1, margin >= 0, block >= 1 "
                                 f"(got {self.history_len}, {self.margin}, {self.block})",
                                 hint="e.g. history_len=16, margin=0, block=128")

    def op_attrs(self) -> dict:
        """The attributes of `accel.ops.fp8_linear` for this recipe."""
        return {"granularity": self.granularity, "x_dtype": self.forward_dtype, "w_dtype": self.forward_dtype,
                "g_dtype": self.grad_dtype, "block": self.block, "margin": self.margin}

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["forward_dtype"], out["grad_dtype"] = self.forward_dtype.name, self.grad_dtype.name
        return out


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("tensorwise_delayed", "tensor", "delayed"),
    Recipe("tensorwise_current", "tensor", "current"),
    Recipe("rowwise", "row", "current", grad_dtype=dt.float8_e4m3fn),
    Recipe("blockwise", "block", "current", grad_dtype=dt.float8_e4m3fn),
)}
HIGH_PRECISION = "bfloat16"  # the policy's name for "not FP8": the layer runs in the model's dtype


def get_recipe(name: str) -> Recipe:
    recipe = RECIPES.get(name)
    if recipe is None:
        raise PrecisionError(f"unknown FP8 recipe {name!r}",
                             hint=f"use one of: {', '.join(RECIPES)} (or {HIGH_PRECISION!r} to keep a layer out of FP8)")
    return recipe
