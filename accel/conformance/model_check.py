"""Model-level conformance: the bundled Llama-family model on a backend against the reference.

Teacher-forced logits for one prompt, per dtype: NMSE and max |difference| of the logits against
the numpy backend in float64, greedy-token agreement (argmax at every position), and, for the
low-precision dtypes, the mean KL divergence KL(p_ref || p_backend) of the next-token
distributions. Skipped, with a note, when the models package or its bundled model is absent.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
from accel.precision.metrics import nmse as nmse_of

import accel

PROMPT = "Once upon a time, a little robot found a red ball in the garden and wanted to play."


@dataclass(frozen=True)
class ModelThresholds:
    """Limits per dtype. Measured on the numpy backend (float32 accumulation) against float64,
    bundled model, the prompt above (30 tokens): float32 NMSE 2.3e-13, max abs 1e-5; float16
    NMSE 9.5e-7, max abs 0.022, KL 5e-6; bfloat16 NMSE 5.8e-5, max abs 0.16, KL 3.1e-4; greedy
    agreement 100% for all three. The limits leave about two orders of margin on NMSE and KL;
    low precision may flip a near-tie argmax, hence 90% agreement."""

    nmse: float
    max_abs: float
    agreement: float
    kl: float | None = None


THRESHOLDS = {
    "float32": ModelThresholds(nmse=1e-9, max_abs=1e-3, agreement=1.0),
    "float16": ModelThresholds(nmse=1e-4, max_abs=0.2, agreement=0.9, kl=5e-4),
    "bfloat16": ModelThresholds(nmse=5e-3, max_abs=1.0, agreement=0.9, kl=1e-2),
}


def _bundled() -> tuple[str | None, str]:
    try:
        import accel.models as models
    except Exception as exc:  # the models package is optional for the op suite
        return None, f"accel.models does not import: {type(exc).__name__}: {exc}"
    path = getattr(models, "bundled_path", lambda: "")()
    if not path or not os.path.isfile(os.path.join(path, "model.safetensors")):
        return None, "the models package provides no bundled model (accel.models.bundled_path())"
    return path, ""


def _prompt_ids(model) -> list[int]:
    if getattr(model, "tokenizer", None) is not None:
        ids = list(model.tokenizer.encode(PROMPT))
        if len(ids) >= 4:
            return ids[:48]
    return [int(i) for i in np.random.Generator(np.random.Philox(0)).integers(0, model.config.vocab_size, 32)]


def _logits(path: str, backend, dtype, ids) -> np.ndarray:
    from accel.models import load_pretrained

    model = load_pretrained(path, backend=backend, dtype=dtype)
    out = model.forward([ids])
    return np.asarray(accel.asnumpy(out), dtype=np.float64)[0]           # (T, V)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare_logits(ref: np.ndarray, got: np.ndarray, dtype: str) -> dict:
    limits = THRESHOLDS[dtype]
    diff = got - ref
    nmse = nmse_of(got, ref)
    max_abs = float(np.max(np.abs(diff)))
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(ref, -1)))
    kl = None
    if limits.kl is not None:
        lp, lq = _log_softmax(ref), _log_softmax(got)
        kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))
    problems = []
    if not np.all(np.isfinite(got)):
        problems.append("non-finite logits")
    if not nmse <= limits.nmse:
        problems.append(f"NMSE {nmse:.3g} > {limits.nmse:g}")
    if not max_abs <= limits.max_abs:
        problems.append(f"max abs {max_abs:.3g} > {limits.max_abs:g}")
    if not agreement >= limits.agreement:
        problems.append(f"greedy agreement {agreement:.2%} < {limits.agreement:.0%}")
    if kl is not None and not kl <= limits.kl:
        problems.append(f"KL {kl:.3g} > {limits.kl:g}")
    return {"dtype": dtype, "nmse": nmse, "max_abs": max_abs, "greedy_agreement": agreement, "kl": kl,
            "status": "fail" if problems else "pass", "reason": "; ".join(problems),
            "thresholds": asdict(limits)}


def check_model(backend, *, against=None, quick: bool = False, dtypes=None) -> dict:
    """The model section of the report (a dict; `failed` counts failing dtypes)."""
    path, why = _bundled()
    if path is None:
        return {"skipped": why, "failed": 0}
    backend = accel.get_backend(backend)
    dtypes = dtypes or (("float32", "bfloat16") if quick else ("float32", "float16", "bfloat16"))
    runs = []
    try:
        from accel.models import load_pretrained

        ids = _prompt_ids(load_pretrained(path, backend="numpy"))
        reference_backend = against or accel.reference_backend()
        ref64 = _logits(path, reference_backend, "float64" if against is None else None, ids)
    except Exception as exc:
        return {"model": os.path.basename(path), "status": "fail", "failed": 1,
                "runs": [], "reason": f"the reference run failed: {type(exc).__name__}: {exc}"}
    for dtype in dtypes:
        try:
            got = _logits(path, backend, dtype, ids)
            runs.append(compare_logits(ref64, got, dtype))
        except accel.UnsupportedError as exc:
            runs.append({"dtype": dtype, "status": "unsupported", "reason": str(exc).split("\n")[0],
                         "nmse": float("nan"), "max_abs": float("nan"), "greedy_agreement": float("nan")})
        except Exception as exc:
            runs.append({"dtype": dtype, "status": "fail", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                         "nmse": float("nan"), "max_abs": float("nan"), "greedy_agreement": float("nan")})
    failed = sum(1 for r in runs if r["status"] == "fail")
    return {"model": os.path.basename(path.rstrip("/")) or path, "path": path, "tokens": len(ids),
            "reference": f"{reference_backend.spec} {'float64' if against is None else 'as stored'}",
            "status": "fail" if failed else "pass", "failed": failed, "runs": runs}
