"""The torch attention kernel: one `F.scaled_dot_product_attention` call, with the static KV
cache's mask recognised on the CPU.

A Llama step over a static cache passes a bool mask built from positions: query i (at position
p_i) sees key j when j <= p_i. Over T new tokens that start at position n - T, it is a causal
mask over the first n keys and nothing beyond. Handed to SDPA as a mask, every key of the cache
is scored and every query row is checked for being fully masked; recognised, SDPA gets only the
n keys and `is_causal` (a prefill from position 0: its flash kernel skips the blocks above the
diagonal) or no mask at all (a one-token decode step). Same numbers: masked keys weigh exactly
zero either way. At prefill-512 of the benchmark model (bfloat16, 2 threads) one layer's
attention went from 13 ms to 3.5 ms; see docs/torch.md.

The check reads the mask on the host, which is free on the CPU but would synchronise an
accelerator's stream, so it runs on the CPU only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from accel.backends.torch.dtypes import F8, F32, rounded

# float16 on the CPU computes in float32 and rounds once (the declaration): torch's CPU flash
# kernel rounds the softmax probabilities to the input dtype before P @ V, which for float16
# (11-bit mantissa) is ~2 ulp off the float64 reference where the float16 thresholds are tight.
# bfloat16 runs natively: that extra rounding is well inside the bfloat16 accumulating
# thresholds, matches Hugging Face and the CUDA kernels, and the float32 detour cost 2.4x the
# attention time (see docs/torch.md, "bfloat16 on the CPU").
_CPU_VIA_F32 = frozenset((torch.float16,)) | F8


def attention(q, k, v, mask=None, *, causal=False, scale=None):
    b, hq, t, _ = q.shape
    hk, s = k.shape[1], k.shape[2]
    dtype = q.dtype
    if q.numel() == 0 or s == 0:  # nothing to attend to: the declaration says zeros
        return torch.zeros((b, hq, t, v.shape[3]), dtype=dtype, device=q.device)
    on_cpu = q.device.type == "cpu"
    if dtype in F8 or (on_cpu and dtype in _CPU_VIA_F32):
        q, k, v = q.to(F32), k.to(F32), v.to(F32)
    extra = _gqa(hq, hk)
    if extra is None:  # pragma: no cover - torch < 2.5 has no enable_gqa
        k, v, extra = k.repeat_interleave(hq // hk, dim=1), v.repeat_interleave(hq // hk, dim=1), {}
    allowed = mask
    # the prefix check reads the mask on the host: not while torch.compile traces (graph break)
    if allowed is not None and on_cpu and not causal and not torch.compiler.is_compiling():
        n = causal_prefix(allowed, t, s)
        if n is not None:  # keys [0, n), query i sees keys j <= n - t + i: no empty row
            k, v = k[:, :, :n], v[:, :, :n]
            if t == 1 or n == t:  # one token sees all n keys; or a causal prefill from 0
                out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, scale=scale, **extra)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=_template(t, n, n, q.device),
                                                     scale=scale, **extra)
            return out if out.dtype == dtype else rounded(out, dtype)
    if allowed is not None and allowed.ndim < 4:
        allowed = allowed.reshape((1,) * (4 - allowed.ndim) + tuple(allowed.shape))
    if causal and allowed is not None:  # SDPA takes a mask or is_causal, not both
        tri = torch.ones((t, s), dtype=torch.bool, device=q.device).tril()
        allowed = allowed & tri
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                         is_causal=bool(causal and allowed is None),
                                         scale=scale, **extra)
    if allowed is not None:
        # A fully masked row outputs zeros (the declaration); some SDPA kernels give NaN there.
        out = torch.where(allowed.any(-1, keepdim=True), out, 0.0)
    return out if out.dtype == dtype else rounded(out, dtype)


def causal_prefix(mask: torch.Tensor, t: int, s: int) -> int | None:
    """n when `mask` is, in every batch and head, the causal mask of T queries over keys [0, n)
    (query i sees keys j <= n - T + i, none beyond n) with n >= T, so no row is empty; else None.

    A sum over the mask's last row and one comparison with a cached template (~35 µs at
    (512, 576); a one-query row of a decode step is read as a list, ~6 µs) against the T*S*D work of scoring the keys it hides and
    the check for empty rows. Host reads: CPU only."""
    if mask.ndim < 2 or tuple(mask.shape[-2:]) != (t, s) or any(d != 1 for d in mask.shape[:-2]):
        return None  # per-batch/per-head masks or broadcast rows/columns: leave them to SDPA
    m = mask.reshape(t, s)
    if t == 1 and s <= _HOST_ROW:  # a decode step: read the row into Python, ~4x cheaper
        row = m.reshape(s).tolist()
        n = row.count(True)
        return n if n and all(row[:n]) else None
    n = int(m[-1].sum())
    if n < t or not _same_bools(m, _template(t, s, n, m.device)):
        return None
    return n


def _same_bools(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal of two bool tensors of one shape (b contiguous), compared 8 bytes at a time
    where a's layout allows: 30 µs instead of 230 µs for a (512, 576) mask."""
    if a.is_contiguous() and a.numel() % 8 == 0 and a.storage_offset() % 8 == 0:
        return torch.equal(a.reshape(-1).view(torch.int64), b.reshape(-1).view(torch.int64))
    return torch.equal(a, b)


_HOST_ROW = 8192  # up to this many keys a one-query mask is checked as a Python list
_TEMPLATES: dict = {}
_MAX_TEMPLATES = 256  # decode adds one (1, S) template per position; prefill one per shape


def _template(t: int, s: int, n: int, device) -> torch.Tensor:
    """The (T, S) bool mask with query i seeing keys j <= n - T + i (j < S), made once."""
    key = (t, s, n, device)
    tri = _TEMPLATES.get(key)
    if tri is None:
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        with torch.inference_mode(False):  # a plain tensor, usable outside inference mode too
            tri = torch.ones((t, s), dtype=torch.bool, device=device).tril(n - t)
        _TEMPLATES[key] = tri
    return tri


def _gqa(hq: int, hk: int) -> dict | None:
    """SDPA's grouped-query keyword where torch has it; None where K/V must be repeated."""
    if hq == hk:
        return {}
    return {"enable_gqa": True} if _HAS_ENABLE_GQA else None


def _has_enable_gqa() -> bool:
    import inspect

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # builtins without a signature: try a tiny call instead
        try:
            z = torch.zeros(1, 2, 1, 1)
            F.scaled_dot_product_attention(z, z[:, :1], z[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False


_HAS_ENABLE_GQA = _has_enable_gqa()
