"""Delayed scaling state: an amax history per FP8 tensor of every FP8 layer (training state).

Transformer Engine's `DelayedScaling`: the scale of this step comes from the amax of earlier
steps (the max over the history, or the most recent one), so the GEMM need not wait for a
reduction over its own input; the amax of this step is pushed into the history afterwards (for
gradients, during the backward pass). A history with nothing in it yet gives way to current
scaling, so the first step is not quantized against a made-up scale of 1.

The histories are accel tensors: `named_tensors()` / `load_named_tensors()` checkpoint them by
name, and `all_reduce_amax()` takes the max across data-parallel ranks.
"""
from __future__ import annotations

from accel import ops
from accel.autodiff.autograd import stop_gradient
from accel.core import dtypes as dt
from accel.core.errors import AccelError
from accel.core.tensor import Tensor
from accel.ops.fp8 import block_amax, scale_from_amax

from .recipes import PrecisionError, Recipe

ROLES = ("x", "w", "g")   # activation, weight, output gradient


class AmaxHistory:
    """The last `length` amax values of one tensor, newest first (float32 (length,))."""

    def __init__(self, length: int, backend, values: Tensor | None = None, filled: int = 0):
        self.length = length
        self.values = values if values is not None else ops.zeros((length,), dt.float32, backend)
        self.filled = filled

    def scale(self, recipe: Recipe, dtype: dt.DType) -> Tensor | None:
        """The (1, 1) dequantizing scale for this step, or None while the history is empty."""
        if self.filled == 0:
            return None
        amax = self.values[:1] if recipe.amax_compute == "most_recent" else ops.max(self.values)
        return scale_from_amax(ops.reshape(amax, (1, 1)), dtype, recipe.margin)

    def record(self, amax: Tensor) -> None:
        amax = ops.reshape(ops.cast(stop_gradient(amax), dt.float32), (1,))
        self.values = ops.concat([amax, self.values[: self.length - 1]], 0) if self.length > 1 else amax
        self.filled = min(self.filled + 1, self.length)


class LayerScaling:
    """The histories of one delayed-scaling layer: its input, weight and output gradient."""

    def __init__(self, recipe: Recipe, backend):
        self.recipe = recipe
        self.histories = {role: AmaxHistory(recipe.history_len, backend) for role in ROLES}

    def scales(self) -> dict[str, Tensor | None]:
        r = self.recipe
        return {"x_scale": self.histories["x"].scale(r, r.forward_dtype),
                "w_scale": self.histories["w"].scale(r, r.forward_dtype),
                "g_scale": self.histories["g"].scale(r, r.grad_dtype)}

    def observe(self, x2d: Tensor, weight: Tensor) -> None:
        """Push this step's activation and weight amax (outside the autograd tape)."""
        self.histories["x"].record(block_amax(ops.cast(stop_gradient(x2d), dt.float32), (-1, -1)))
        self.histories["w"].record(block_amax(ops.cast(stop_gradient(weight), dt.float32), (-1, -1)))

    def grad_observer(self):
        return self.histories["g"].record


class DelayedScalingState:
    """Every delayed-scaling layer's histories, keyed by layer name (training state)."""

    PREFIX = "fp8_amax_history"

    def __init__(self):
        self.layers: dict[str, LayerScaling] = {}

    def layer(self, name: str, recipe: Recipe, backend) -> LayerScaling:
        found = self.layers.get(name)
        if found is None:
            found = self.layers[name] = LayerScaling(recipe, backend)
        return found

    def named_tensors(self) -> dict[str, Tensor]:
        """{f"{PREFIX}.{layer}.{role}": history} for a checkpoint (safetensors, no pickle)."""
        return {f"{self.PREFIX}.{name}.{role}": h.values
                for name, layer in self.layers.items() for role, h in layer.histories.items()}

    def filled_counts(self) -> dict[str, int]:
        return {f"{self.PREFIX}.{name}.{role}": h.filled
                for name, layer in self.layers.items() for role, h in layer.histories.items()}

    def load_named_tensors(self, tensors: dict[str, Tensor], recipes: dict[str, Recipe], backend,
                           filled: dict[str, int] | None = None) -> None:
        """Restore histories saved by `named_tensors` (a history's length must match its recipe)."""
        for key, values in tensors.items():
            if not key.startswith(self.PREFIX + "."):
                continue
            name, role = key[len(self.PREFIX) + 1:].rsplit(".", 1)
            recipe = recipes.get(name)
            if recipe is None or role not in ROLES:
                raise PrecisionError(f"checkpoint holds an amax history for {name!r} ({role}), which the "
                                     f"FP8 policy does not run with delayed scaling",
                                     hint="resume with the policy the run was started with")
            if tuple(values.shape) != (recipe.history_len,):
                raise PrecisionError(f"layer {name!r}: saved {role} amax history has {list(values.shape)} "
                                     f"entries, the recipe keeps {recipe.history_len}",
                                     hint="resume with the same recipe (history_len) as the saved run")
            h = self.layer(name, recipe, backend).histories[role]
            h.values = ops.cast(values.to(backend), dt.float32)
            h.filled = recipe.history_len if filled is None else int(filled.get(key, recipe.history_len))

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        """(tensors, metadata) for a training checkpoint: every history by name, and how many
        entries of each are filled (a history not yet full must stay so after a resume, or the
        max over it would take the zeros it was created with as real amax values)."""
        import json

        return self.named_tensors(), {"fp8_amax_filled": json.dumps(self.filled_counts(), sort_keys=True)}

    def restore(self, tensors: dict[str, Tensor], metadata: dict[str, str], recipes: dict[str, Recipe],
                backend) -> None:
        """Load what `checkpoint` wrote; the histories continue as if the run had not stopped."""
        import json

        filled = json.loads(metadata.get("fp8_amax_filled", "{}"))
        self.load_named_tensors(tensors, recipes, backend, filled)

    def all_reduce_amax(self) -> None:
        """Max of every history across data-parallel ranks (one bucketed collective), so that all
        ranks quantize alike; call it after the backward pass, before the next step."""
        try:
            from accel.distributed import all_reduce_buckets
        except ImportError as exc:
            raise AccelError(f"all-reducing FP8 amax histories needs accel.distributed ({exc})",
                             hint="run single-process, or install a build of accel with accel.distributed") from None
        histories = [h for layer in self.layers.values() for h in layer.histories.values()]
        for h, reduced in zip(histories, all_reduce_buckets([h.values for h in histories], op="max")):
            h.values = reduced
