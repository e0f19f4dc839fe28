"""torch kernels for the composites torch fuses: one library call (or a few) where the
decomposition would dispatch many primitives. Each keeps the declaration's numerics: low precision
is computed in float32 and rounded once, in the op's documented order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from accel import ops
from accel.core.bounds import TARGET_HINT, check_bounds
from accel.backends.torch.dtypes import F8, F32, LOW, rounded, up
from accel.backends.torch.attention import attention
from accel.backends.torch.primitives import gather


def softmax(x, *, axis=-1):
    if x.dtype in LOW:
        return rounded(torch.softmax(x, axis, dtype=F32), x.dtype)
    return torch.softmax(x, axis)


def log_softmax(x, *, axis=-1):
    if x.dtype in LOW:
        return rounded(torch.log_softmax(x, axis, dtype=F32), x.dtype)
    return torch.log_softmax(x, axis)


def gelu(x, *, approximate="none"):
    if not x.is_contiguous():
        x = x.contiguous()  # see torch_primitives._math_unary
    if x.dtype in F8:
        return rounded(F.gelu(x.to(F32), approximate=approximate), x.dtype)
    return F.gelu(x, approximate=approximate)


def rms_norm(x, weight=None, *, eps=1e-6):
    # As the declaration (and Hugging Face Llama): normalise in float32, round, then scale.
    if x.dtype not in LOW and x.numel():  # no rounding step in between: one fused call
        return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    if x.numel() == 0:
        y = x.clone()
    else:
        y = rounded(F.rms_norm(up(x), (x.shape[-1],), eps=eps), x.dtype)
    if weight is None:
        return y
    return rounded(y.to(F32) * weight.to(F32), x.dtype) if x.dtype in F8 else y * weight


def layer_norm(x, weight=None, bias=None, *, eps=1e-5):
    if x.dtype not in LOW and x.numel():  # no rounding step in between: one fused call
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=eps)
    if x.numel() == 0:
        y = x.clone()
    else:
        y = rounded(F.layer_norm(up(x), (x.shape[-1],), eps=eps), x.dtype)
    if x.dtype in F8:
        y = y.to(F32)
        weight = None if weight is None else weight.to(F32)
        bias = None if bias is None else bias.to(F32)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return rounded(y, x.dtype) if x.dtype in F8 else y


def rope(x, cos, sin):
    # Low precision computes in float32 and rounds once: the float16 decomposition rounds three
    # times and loses ~1e-3 relative where x*cos and rotated*sin nearly cancel.
    dtype = x.dtype
    if dtype in LOW:
        x, cos, sin = x.to(F32), cos.to(F32), sin.to(F32)
    d = x.shape[-1]
    # rotate_half(x) * sin == roll(x, D/2) * (sin with its first half negated): one roll and a
    # product on the small (T, D) table instead of slice, neg and cat on x (about 1.5x faster
    # at decode shapes), with the same roundings bit for bit (negation is exact).
    out = x * cos + torch.roll(x, d // 2, -1) * (sin * _half_negated_ones(d, sin.dtype, sin.device))
    return rounded(out, dtype) if dtype in LOW else out


_SIGNS: dict = {}


def _half_negated_ones(d: int, dtype, device) -> torch.Tensor:
    """(-1, ..., -1, 1, ..., 1) of length d, made once per (d, dtype, device)."""
    if torch.compiler.is_compiling():  # a cache lookup would become a guard (one recompile)
        half = torch.ones(d // 2, dtype=dtype, device=device)
        return torch.cat([-half, torch.ones(d - d // 2, dtype=dtype, device=device)])
    key = (d, dtype, device)
    signs = _SIGNS.get(key)
    if signs is None:
        with torch.inference_mode(False):  # a plain tensor, even if the first call is in one
            signs = torch.ones(d, dtype=dtype, device=device)
            signs[: d // 2] = -1.0
        _SIGNS[key] = signs
    return signs


def linear(x, weight, bias=None):
    if x.dtype in F8:
        out = F.linear(x.to(F32), weight.to(F32), None if bias is None else bias.to(F32))
        return rounded(out, x.dtype)
    return F.linear(x, weight, bias)


def embedding(weight, ids):
    return gather(weight, ids, axis=0)


def cross_entropy(logits, targets, *, ignore_index=-100, reduction="mean"):
    classes = logits.shape[-1]
    flat_targets = targets.reshape(-1).to(torch.int64)
    if flat_targets.numel():
        # Checked here on every device (one small reduction and a sync): on an accelerator a bad
        # target is a device-side assert, and the message is the one every backend gives.
        kept = flat_targets[flat_targets != ignore_index]
        if kept.numel():
            lo, hi = (int(v) for v in torch.aminmax(kept))
            check_bounds(lo, hi, classes, axis=-1, what="target", hint=TARGET_HINT)
    out = F.cross_entropy(up(logits).reshape(-1, classes), flat_targets,
                          ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        out = out.reshape(targets.shape)
    return rounded(out, logits.dtype)


FUSED_KERNELS = {
    ops.softmax: softmax,
    ops.log_softmax: log_softmax,
    ops.gelu: gelu,
    ops.rms_norm: rms_norm,
    ops.layer_norm: layer_norm,
    ops.rope: rope,
    ops.linear: linear,
    ops.embedding: embedding,
    ops.cross_entropy: cross_entropy,
    ops.attention: attention,
}

FLOAT8_NATIVE = frozenset((ops.embedding,))  # a gather: runs on float8 storage
