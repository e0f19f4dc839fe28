"""An FP8 linear written in plain torch, independent of accel's: the reference that
tests/precision/test_fp8_linear_torch_reference.py holds `accel.ops.fp8_linear` to and that
benchmarks/fp8_torch_reference.py trains a Hugging Face Llama with.

Only torch's float8 dtypes, their casts and torch ops: the scale of a block is amax / 448
(float8_e4m3fn) or amax / 57344 (float8_e5m2), computed in float32 (a zero block gets 1); the
codes are round-to-nearest-even of x / scale after a clamp to the format's largest value (a
saturating cast). Tensor- and row-wise GEMMs run on `torch._scaled_mm` (on CPU too); the
block-wise GEMM promotes each 128-long K-slice's float32 partial product by its two scales, as
DeepSeek-V3 does on the GPU.

Which axis each operand is scaled along, per GEMM of y = x wᵀ (x (M, K), w (N, K), g = dL/dy
(M, N)); the block is (rows, cols) of the operand as it is stored, -1 = the whole dimension:

    recipe              forward     dx = g · w          dw = gᵀ · x          formats
    tensorwise_current  x, w whole  g, w whole          g, x whole           e4m3fn fwd, e5m2 g
    rowwise             x (1,-1)    g (1,-1)            g (-1,1)             e4m3fn throughout
                        w (1,-1)    w (-1,1)            x (-1,1)             (torchao "rowwise")
    blockwise           x (1,128)   g (1,128)           g (128,1)            e4m3fn throughout
                        w (128,128) w (128,128)         x (128,1)            (DeepSeek-V3)

A scale never lies along a GEMM's contracted dim except in block-wise, where each K-slice's
partial sum is scaled separately.
"""
from __future__ import annotations

import torch
from torch import nn

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
LARGEST = {E4M3: 448.0, E5M2: 57344.0}
WHOLE, ROW, COL = (-1, -1), (1, -1), (-1, 1)
TILE, SQUARE, TALL = (1, 128), (128, 128), (128, 1)

# recipe -> (forward format, gradient format, kind of GEMM, operand blocks)
RECIPES = {
    "tensorwise_current": (E4M3, E5M2, "scaled_mm",
                           dict(x=WHOLE, w=WHOLE, g_dx=WHOLE, w_dx=WHOLE, g_dw=WHOLE, x_dw=WHOLE)),
    "rowwise": (E4M3, E4M3, "scaled_mm", dict(x=ROW, w=ROW, g_dx=ROW, w_dx=COL, g_dw=COL, x_dw=COL)),
    "blockwise": (E4M3, E4M3, "k_blocks", dict(x=TILE, w=SQUARE, g_dx=TILE, w_dx=SQUARE, g_dw=TALL, x_dw=TALL)),
}


def quantize(v: torch.Tensor, dtype: torch.dtype, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of a 2-d tensor; scales has one float32 entry per (partial) block."""
    v = v.float()
    rows, cols = v.shape
    br = rows if block[0] == -1 else min(block[0], rows)
    bc = cols if block[1] == -1 else min(block[1], cols)
    nr, nc = -(-rows // br), -(-cols // bc)
    padded = torch.zeros(nr * br, nc * bc, dtype=torch.float32)
    padded[:rows, :cols] = v.abs()
    amax = padded.reshape(nr, br, nc, bc).amax(dim=(1, 3))
    scales = torch.where(amax > 0, amax / LARGEST[dtype], torch.ones_like(amax))
    full = scales.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:rows, :cols]
    top = LARGEST[dtype]
    return (v / full).clamp(-top, top).to(dtype), scales


def scaled_mm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
    """(a·sa) @ (b·sb) in float32 for a one-scale-or-one-per-row a and one-or-per-column b."""
    if sa.numel() == 1 and sb.numel() == 1:  # tensor-wise: 0-d scales
        sa, sb = sa.reshape(()), sb.reshape(())
    else:  # row-wise: dense (M, 1) and (1, N) with unit inner stride, as _scaled_mm checks
        sa = sa.expand(a.shape[0], 1).flatten().clone().unsqueeze(1)
        sb = sb.expand(1, b.shape[1]).flatten().clone().unsqueeze(0)
    return torch._scaled_mm(a, b.t().contiguous().t(), sa, sb, out_dtype=torch.float32)


def k_block_mm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor, bn: int,
               k: int = 128) -> torch.Tensor:
    """DeepSeek-V3's block-scaled GEMM: a (M, K) with a scale per row and K-slice (M, ⌈K/k⌉),
    b (K, N) with a scale per K-slice and block of `bn` columns (⌈K/k⌉, ⌈N/bn⌉); each slice's
    float32 partial product is multiplied by its scales and summed in float32."""
    n = b.shape[1]
    out = torch.zeros(a.shape[0], n, dtype=torch.float32)
    for j, start in enumerate(range(0, a.shape[1], k)):
        part = a[:, start:start + k].float() @ b[start:start + k].float()
        out += part * sa[:, j:j + 1] * sb[j].repeat_interleave(bn)[:n]
    return out


def _gemm(kind: str, a, sa, b, sb, b_cols: int):
    """b_cols: how many of b's columns share a scale (block-wise only)."""
    return scaled_mm(a, sa, b, sb) if kind == "scaled_mm" else k_block_mm(a, sa, b, sb, b_cols)


class Fp8LinearFunction(torch.autograd.Function):
    """y = x wᵀ with the forward GEMM and both backward GEMMs in FP8 (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, recipe: str) -> torch.Tensor:
        fwd, _, kind, blocks = RECIPES[recipe]
        ctx.save_for_backward(x, weight)
        ctx.recipe = recipe
        x2 = x.reshape(-1, x.shape[-1])
        xq, sx = quantize(x2, fwd, blocks["x"])
        wq, sw = quantize(weight, fwd, blocks["w"])
        y = _gemm(kind, xq, sx, wq.t(), sw.t(), blocks["w"][0])
        return y.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        fwd, bwd, kind, blocks = RECIPES[ctx.recipe]
        g = grad.reshape(-1, weight.shape[0]).float()
        x2 = x.reshape(-1, x.shape[-1]).float()
        gq, sg = quantize(g, bwd, blocks["g_dx"])
        wq, sw = quantize(weight, fwd, blocks["w_dx"])
        dx = _gemm(kind, gq, sg, wq, sw, blocks["w_dx"][1]).to(x.dtype).reshape(x.shape)
        gq, sg = quantize(g, bwd, blocks["g_dw"])
        xq, sx = quantize(x2, fwd, blocks["x_dw"])
        dw = _gemm(kind, gq.t(), sg.t(), xq, sx, blocks["x_dw"][1]).to(weight.dtype)
        return dx, dw, None


class Fp8Linear(nn.Module):
    """A bias-free nn.Linear whose three GEMMs run through Fp8LinearFunction; it keeps the
    replaced layer's weight Parameter, so optimizers and state dicts see the same tensor."""

    def __init__(self, linear: nn.Linear, recipe: str):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Fp8Linear covers bias-free linears (Llama's)")
        self.weight, self.recipe = linear.weight, recipe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fp8LinearFunction.apply(x, self.weight, self.recipe)


def replace_linears(module: nn.Module, recipe: str, where=lambda name: True) -> list[str]:
    """Every nn.Linear under `module` whose qualified name passes `where` becomes an Fp8Linear;
    returns the replaced names."""
    done = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and where(full):
                setattr(child, attr, Fp8Linear(sub, recipe))
                done.append(full)
    return done
