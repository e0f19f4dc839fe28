"""Central finite differences in float64 on the reference backend, the oracle for every VJP."""
from __future__ import annotations

import numpy as np

import accel

EPS = 1e-6


def as_tensors(arrays, backend, float_dtype=accel.float64):
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            out.append(accel.tensor(a, dtype=float_dtype, backend=backend))
        elif isinstance(a, np.ndarray):
            out.append(accel.from_numpy(a, backend=backend))
        else:
            out.append(a)  # Python scalars, None, attrs
    return out


def scalar_loss(fn, cotangent):
    """L(inputs) = sum(fn(inputs) * cotangent): its gradient is the VJP of fn at `cotangent`."""
    def loss(*tensors):
        y = fn(*tensors)
        c = accel.tensor(cotangent, dtype=y.dtype, backend=y.backend)
        return accel.ops.sum(y * c)
    return loss


def finite_difference(fn, arrays, cotangent) -> list:
    """d L / d input for every floating numpy input (None for the others)."""
    ref = accel.get_backend("numpy")

    def value(current):
        y = fn(*as_tensors(current, ref))
        return float(np.sum(np.asarray(y.numpy(), np.float64) * cotangent))

    grads = []
    for i, a in enumerate(arrays):
        if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
            grads.append(None)
            continue
        g = np.zeros_like(a, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() if isinstance(x, np.ndarray) else x for x in arrays]
            minus = [x.copy() if isinstance(x, np.ndarray) else x for x in arrays]
            plus[i][idx] += EPS
            minus[i][idx] -= EPS
            g[idx] = (value(plus) - value(minus)) / (2 * EPS)
        grads.append(g)
    return grads
