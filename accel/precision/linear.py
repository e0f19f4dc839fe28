"""The FP8 linear as models call it: `linear(name, x, weight, bias, weight_scale)`.

A model routes each projection through here (models/llama.py does). What runs depends on the
layer's name and weight:

  * a weight stored in float8 (FP8 inference, `apply_policy`) runs `ops.fp8_linear` with its
    saved scales; the recipe is read from the scale's shape;
  * inside `fp8_autocast(plan)` a layer the plan puts in FP8 runs `ops.fp8_linear` with the
    plan's recipe; delayed-scaling layers take their scales from, and feed their amax into, the
    plan's histories (training: float32 master weights, FP8 GEMMs forward and backward);
  * anything else is the plain `ops.linear`.

Which layers ran FP8 is counted (`layer_stats()`, shown by `accel port-report`).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import warnings
from collections import Counter

from accel import ops
from accel.autodiff.autograd import stop_gradient
from accel.core import dtypes as dt
from accel.core.dispatch import AccelWarning, mode
from accel.core.tensor import Tensor
from accel.ops.fp8 import gemm_blocks, scale_shape

from .recipes import RECIPES, PrecisionError, Recipe
from .scaling import DelayedScalingState

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("accel_fp8_plan", default=None)
_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("accel_fp8_capture", default=None)
_lock = threading.Lock()
_counts: Counter = Counter()          # (layer, recipe) -> FP8 calls
_skipped: Counter = Counter()         # (layer, backend) -> calls run unquantized (no float8 there)
_warned: set = set()


class Capture:
    """The planner's view of one forward pass: each watched layer's input and output, and a zero
    probe added to its output so that differentiating by the probe gives dL/dY."""

    def __init__(self, probes: dict[str, Tensor]):
        self.probes = probes
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}


@contextlib.contextmanager
def capture(probes: dict[str, Tensor]):
    token = _CAPTURE.set(Capture(probes))
    try:
        yield _CAPTURE.get()
    finally:
        _CAPTURE.reset(token)


class Fp8Plan:
    """Which layers run FP8 with which recipe, plus the delayed-scaling state (training)."""

    def __init__(self, recipes: dict[str, Recipe], state: DelayedScalingState | None = None):
        self.recipes = dict(recipes)
        self.state = state or DelayedScalingState()

    def wrap(self, fn):
        """fn run inside `fp8_autocast(self)`: wrap a loss function for training."""
        def fp8_fn(*args, **kwargs):
            with fp8_autocast(self):
                return fn(*args, **kwargs)
        fp8_fn.__name__ = f"fp8({getattr(fn, '__name__', 'fn')})"
        return fp8_fn

    def delayed_recipes(self) -> dict[str, Recipe]:
        return {n: r for n, r in self.recipes.items() if r.scaling == "delayed"}


@contextlib.contextmanager
def fp8_autocast(plan: Fp8Plan | None):
    """Within the block, layers named by `plan` run FP8 (Transformer Engine's `fp8_autocast`)."""
    token = _ACTIVE.set(plan)
    try:
        yield plan
    finally:
        _ACTIVE.reset(token)


def check_backend(backend, layer: str, dtype: dt.DType = dt.float8_e4m3fn) -> bool:
    """Whether `backend` can hold the layer's float8 values. One that cannot (no float8 tensors)
    is an error in strict mode; otherwise the layer runs unquantized, with one warning and a
    count in `skipped_layers()` (nothing is downgraded silently)."""
    if dtype in backend.dtypes:
        return True
    if mode.strict:
        raise PrecisionError(f"layer {layer!r}: FP8 ({dtype.name}) was asked of {backend.spec}, which has no "
                             f"{dtype.name} tensors, and strict mode forbids running it otherwise",
                             hint="keep this layer in bfloat16 in the policy, run on a backend that lists "
                                  "float8 in `accel info`, or turn strict mode off (the layer then runs unquantized)")
    with _lock:
        _skipped[(layer, backend.spec)] += 1
    key = (backend.spec, dtype)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"accel: {backend.spec} has no {dtype.name} tensors; FP8 layers (first: {layer!r}) run "
                      f"unquantized there (counted in accel.precision.skipped_layers())", AccelWarning, stacklevel=3)
    return False


def skipped_layers() -> dict[tuple[str, str], int]:
    """{(layer, backend): calls} of FP8 layers that ran unquantized for want of float8 tensors."""
    with _lock:
        return dict(_skipped)


def stored_recipe(layer: str, weight: Tensor, weight_scale: Tensor | None) -> Recipe:
    """The recipe a float8-stored weight was quantized with, read from its scale's shape."""
    if weight_scale is None:
        raise PrecisionError(f"layer {layer!r}: the weight is stored as {weight.dtype.name} but the "
                             f"checkpoint has no {layer}.weight_scale",
                             hint="save FP8 models with accel.precision.save_fp8_model, which writes the scales")
    shape = tuple(weight.shape)
    for name in ("rowwise", "blockwise", "tensorwise_current"):
        recipe = RECIPES[name]
        if scale_shape(shape, gemm_blocks(recipe.granularity, recipe.block)["w"]) == tuple(weight_scale.shape):
            return recipe
    raise PrecisionError(f"layer {layer!r}: weight_scale {list(weight_scale.shape)} fits no recipe for a "
                         f"{list(shape)} weight", hint="re-quantize the weight with accel.precision.apply_policy")


def _count(layer: str, recipe: str) -> None:
    with _lock:
        _counts[(layer, recipe)] += 1


def layer_stats() -> dict[str, dict[str, int]]:
    """{layer: {recipe: calls}} of the FP8 linears run since the last reset."""
    out: dict[str, dict[str, int]] = {}
    with _lock:
        for (layer, recipe), n in sorted(_counts.items()):
            out.setdefault(layer, {})[recipe] = n
    return out


def reset_layer_stats() -> None:
    with _lock:
        _counts.clear()
        _skipped.clear()
        _warned.clear()  # a new count warns anew: the warning is once per cause per count


def linear(name: str, x: Tensor, weight: Tensor, bias: Tensor | None = None,
           weight_scale: Tensor | None = None) -> Tensor:
    """y = x weightᵀ + bias for the layer `name`, in FP8 where the weight or the active plan
    says so (see the module docstring)."""
    if weight.dtype in dt.FLOAT8_DTYPES:
        recipe = stored_recipe(name, weight, weight_scale)
        _count(name, recipe.name)
        return ops.fp8_linear(x, weight, bias, None, weight_scale, None, **recipe.op_attrs())
    plan = _ACTIVE.get()
    recipe = plan.recipes.get(name) if plan is not None else None
    if recipe is None:
        watch = _CAPTURE.get()
        if watch is not None and name in watch.probes:
            y = ops.linear(x, weight, bias)
            watch.inputs[name], watch.outputs[name] = stop_gradient(x), stop_gradient(y)
            return ops.add(y, watch.probes[name])
        return ops.linear(x, weight, bias)
    if not check_backend(x.backend, name, recipe.forward_dtype):
        return ops.linear(x, weight, bias)
    _count(name, recipe.name)
    if recipe.scaling != "delayed":
        return ops.fp8_linear(x, weight, bias, **recipe.op_attrs())
    layer = plan.state.layer(name, recipe, x.backend)
    scales = layer.scales()
    out = ops.fp8_linear(x, weight, bias, scales["x_scale"], scales["w_scale"], scales["g_scale"],
                         observer=layer.grad_observer(), **recipe.op_attrs())
    if x.requires_grad or weight.requires_grad:
        # Only training steps feed the histories: an evaluation pass in between (accel train's
        # eval) uses the scales but must not shift them, or where evals fall would change training
        # and a resumed run would not continue the uninterrupted one.
        layer.observe(ops.reshape(x, (math.prod(x.shape[:-1]), x.shape[-1])), weight)
    return out
