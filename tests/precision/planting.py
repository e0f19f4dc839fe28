"""A planted FP8-sensitive layer for the planner tests."""
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
