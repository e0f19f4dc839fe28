"""Planted FP8-sensitive layers for the planner tests."""
import numpy as np

import accel


def plant_outlier_channels(model, layer: int, factor: float = 1e5, every: int = 8) -> str:
    """Make `layer`'s down_proj input outlier-heavy without changing the model's function:
    every `every`-th intermediate channel of up_proj is multiplied by `factor` and the matching
    down_proj column divided by it (silu(gate) * up is linear in up). Returns the layer name."""
    p = f"model.layers.{layer}.mlp."
    up = model.params[p + "up_proj.weight"].numpy().copy()
    down = model.params[p + "down_proj.weight"].numpy().copy()
    up[::every] *= factor
    down[:, ::every] /= factor
    model.params[p + "up_proj.weight"] = accel.from_numpy(up, model.backend)
    model.params[p + "down_proj.weight"] = accel.from_numpy(down, model.backend)
    return p + "down_proj"


def plant_similar_positions(model, spread: float = 0.03) -> None:
    """Make every token's embedding nearly the same vector: the mean embedding's direction at
    the rows' mean norm, plus `spread` times each row's own deviation from the mean. The values
    of different positions then differ by little beside the values themselves, so the gradient of
    the attention scores, P∘(dP − rowsum(P∘dP)) with dP = dO·Vᵀ, is a small difference of large
    terms, and FP8 error in what feeds it is magnified (the v_proj effect of docs/fp8.md). This
    changes the model's function; the tests measure what it does."""
    name = "model.embed_tokens.weight"
    e = model.params[name].numpy().astype(np.float64)
    mean = e.mean(0)
    common = mean / np.linalg.norm(mean) * np.linalg.norm(e, axis=1).mean()
    model.params[name] = accel.from_numpy((common + spread * (e - mean)).astype(np.float32), model.backend)
