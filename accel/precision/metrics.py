"""Error measures of the FP8 work, written once: NMSE and SQNR (signal-to-quantization-noise)."""
from __future__ import annotations

import math

import numpy as np


def nmse(actual, reference) -> float:
    """Σ(a − r)² / Σr² in float64."""
    a, r = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    den = float(np.sum(r * r))
    num = float(np.sum((a - r) ** 2))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def sqnr_db(actual, reference) -> float:
    """10·log10(Σr² / Σ(a − r)²): how far the signal stands above the quantization noise."""
    e = nmse(actual, reference)
    return math.inf if e == 0 else -10.0 * math.log10(e)
