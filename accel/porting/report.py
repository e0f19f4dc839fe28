"""The porting report: how a model runs on a backend, op by op, and how far it drifts from the
reference backend.

It runs a prompt through a model directory on the target backend under a profiling interceptor
and reports, for every op the model calls (composites and the primitives they decompose into),
the calls, how they ran (native / decomposed / host fallback / downcast, from
`accel.core.dispatch.stats`), and their share of the time; then, for the model, the max logit
deviation and the greedy-token agreement against the reference backend.

Backend-agnostic: a backend whose `simulated_time` is not None (npusim) is timed on its simulated
clock; any other is timed on the wall clock, synchronizing after each op so that time lands on
the op that spent it. A backend's optional `counters()` dict (memory, transfers) is included.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from accel import precision
from accel.precision.metrics import nmse as nmse_of
from accel.core import dispatch
from accel.core.dtypes import ALL_DTYPES, DType
from accel.core.errors import AccelError
from accel.ops import BY_NAME
from accel.core.registry import current_backend, get_backend, reference_backend
from accel.core.tensor import Tensor

DEFAULT_PROMPT = "Once upon a time"
_HOW = ("native", "decomposed", "fallback", "downcast", "failed")


# --- per-op profiling through the dispatcher's interceptor chain ----------------------------
@dataclass
class _Timing:
    calls: int = 0
    total: float = 0.0   # inclusive: the op and everything it decomposed into
    own: float = 0.0     # exclusive: minus the ops it called
    dtypes: set = field(default_factory=set)  # of the first tensor input (or the dtype attr)
    failed: int = 0      # calls that raised (counted on the innermost op only)


class OpProfiler:
    """`with OpProfiler(backend) as p:` counts every op call on `backend` and times it.

    Nested calls (a composite's decomposition) are seen too: `total` is inclusive, `own`
    excludes the nested ops, so the `own` times add up to the time spent inside ops.
    """

    def __init__(self, backend):
        self.backend = backend
        self.simulated = backend.simulated_time is not None
        self.timings: dict[str, _Timing] = {}
        self._children: list[float] = []
        self._raising = False  # an error is unwinding and its innermost op is already counted

    def now(self) -> float:
        return self.backend.simulated_time if self.simulated else time.perf_counter()

    def __enter__(self) -> "OpProfiler":
        dispatch.push_interceptor(self)
        return self

    def __exit__(self, *exc) -> None:
        dispatch.pop_interceptor(self)

    def __call__(self, op, args, attrs):
        backend, dtype = _backend_and_dtype(op, args, attrs)
        if backend is not self.backend:
            return _call_below(self, op, args, attrs)  # e.g. the reference side of a host fallback
        start = self.now()
        self._children.append(0.0)
        self._raising = False
        failed = False
        try:
            return _call_below(self, op, args, attrs)
        except BaseException:
            failed, self._raising = not self._raising, True
            raise
        finally:
            if not self.simulated:
                self.backend.synchronize()
            elapsed = self.now() - start
            nested = self._children.pop()
            timing = self.timings.get(op.name)
            if timing is None:
                timing = self.timings[op.name] = _Timing()
            timing.calls += 1
            timing.failed += failed
            if dtype is not None:
                timing.dtypes.add(dtype)
            timing.total += elapsed
            timing.own += elapsed - nested
            if self._children:
                self._children[-1] += elapsed


def _backend_and_dtype(op, args, attrs):
    tensors = [*args[0], *args[1:]] if op.variadic and args else args
    for a in tensors:
        if isinstance(a, Tensor):
            return a.backend, a.dtype
    spec = attrs.get("backend")
    dtype = attrs.get("dtype")
    return (get_backend(spec) if spec is not None else current_backend(),
            dtype if isinstance(dtype, DType) else None)


def _call_below(me, op, args, attrs):
    """Run the interceptors pushed before `me` (tracing, autograd), then the eager path."""
    chain = dispatch.mode.interceptors
    below = chain[chain.index(me) + 1:]
    for interceptor in below:
        result = interceptor(op, args, attrs)
        if result is not NotImplemented:
            return result
    return dispatch.checked_eager(op, args, attrs) if dispatch.mode.checked else dispatch.eager(op, args, attrs)


# --- the report -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpRow:
    op: str
    kind: str            # primitive | composite
    calls: int
    native: int
    decomposed: int
    fallback: int
    downcast: int
    own_time: float      # seconds (simulated or wall) in this op's own kernels and transfers
    total_time: float    # seconds including what it decomposed into
    share: float         # own_time / total run time
    total_share: float   # total_time / total run time
    dtypes: tuple[str, ...] = ()  # dtypes it was called with (first tensor input)
    failed: int = 0      # calls that raised (the op the backend refused)
    note: str = ""       # why it did not run natively, from the backend's declared capabilities

    @property
    def how(self) -> str:
        parts = [f"{k} {getattr(self, k)}" for k in _HOW if getattr(self, k)]
        if len(parts) == 1:
            return parts[0].split(" ")[0].replace("fallback", "host fallback")
        return ", ".join(parts).replace("fallback", "host fallback")


@dataclass(frozen=True)
class ModelCheck:
    reference: str
    reference_dtype: str
    prompt_tokens: int
    max_logit_deviation: float     # max |logit - reference logit| over the prompt's positions
    max_reference_logit: float     # max |reference logit|, for scale
    logits_nmse: float             # sum (a - r)^2 / sum r^2
    greedy_matches: int            # positions where the greedy tokens are equal
    greedy_tokens: int
    first_divergence: int | None   # index of the first differing token, None if identical
    tokens: tuple[int, ...]
    reference_tokens: tuple[int, ...]

    @property
    def greedy_agreement(self) -> float:
        return self.greedy_matches / self.greedy_tokens if self.greedy_tokens else 1.0


@dataclass(frozen=True)
class PortReport:
    backend: str
    device: str
    model: str
    model_summary: str
    dtype: str
    prompt: str
    new_tokens: int
    clock: str                      # "simulated" | "wall"
    total_time: float               # seconds of the profiled generation
    outside_ops_time: float         # part of it spent outside any op (e.g. reading tokens back)
    ops: tuple[OpRow, ...]
    check: ModelCheck | None
    counters: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: str | None = None
    fp8_layers: dict[str, dict[str, int]] = field(default_factory=dict)  # layer -> {recipe: calls}

    @property
    def ok(self) -> bool:
        return self.error is None

    # --- renderings ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ops"] = [{**asdict(r), "how": r.how} for r in self.ops]
        if self.check is not None:
            out["check"]["greedy_agreement"] = self.check.greedy_agreement
        return _json_safe(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _header(self) -> list[str]:
        return [
            f"backend: {self.backend} ({self.device})",
            f"model: {self.model} — {self.model_summary}",
            f"workload: prompt {self.prompt!r} + {self.new_tokens} greedy tokens in {self.dtype}; "
            f"clock: {self.clock}",
        ]

    def _totals(self) -> list[str]:
        lines = []
        per_token = self.total_time / self.new_tokens if self.new_tokens else 0.0
        lines.append(f"{self.clock} time: {_seconds(self.total_time)} for the generation "
                     f"({_seconds(per_token)} per token; {_seconds(self.outside_ops_time)} outside ops)")
        c = self.counters
        if c:
            known = {"h2d_bytes": "host->device", "d2h_bytes": "device->host",
                     "memory_peak": "peak device memory", "kernel_launches": "kernel launches"}
            shown = [f"{label} {_bytes(c[k]) if k.endswith(('bytes', 'peak')) else c[k]}"
                     for k, label in known.items() if k in c]
            if shown:
                lines.append("device: " + ", ".join(shown))
        ch = self.check
        if ch is not None:
            div = "none" if ch.first_divergence is None else f"at token {ch.first_divergence}"
            lines.append(f"vs {ch.reference} ({ch.reference_dtype}): max |logit deviation| "
                         f"{ch.max_logit_deviation:.3g} (max |logit| {ch.max_reference_logit:.3g}, "
                         f"NMSE {ch.logits_nmse:.3g}); greedy tokens agree {ch.greedy_matches}/"
                         f"{ch.greedy_tokens} ({ch.greedy_agreement:.0%}), first divergence: {div}")
        if self.fp8_layers:  # accel.precision: which linears ran FP8 (docs/fp8.md)
            recipes = sorted({r for per in self.fp8_layers.values() for r in per})
            lines.append(f"FP8 layers: {len(self.fp8_layers)} ran FP8 ({', '.join(recipes)}): "
                         + ", ".join(self.fp8_layers))
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.error:
            lines.append(f"FAILED: the model does not run on {self.backend}:")
            lines.extend("  " + line for line in self.error.splitlines())
        return lines

    _COLUMNS = ("op", "kind", "dtypes", "calls", "how it ran", "own time", "share", "incl. share", "why")
    _RIGHT = (3, 5, 6, 7)

    def _cells(self, r: OpRow) -> tuple[str, ...]:
        return (r.op, r.kind, ",".join(r.dtypes), str(r.calls), r.how, _seconds(r.own_time),
                f"{r.share:.1%}", f"{r.total_share:.1%}", r.note)

    def to_text(self) -> str:
        rows = [self._COLUMNS] + [self._cells(r) for r in self.ops]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._COLUMNS))]
        right = set(self._RIGHT)
        table = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
        table.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(["accel port report", *self._header(), "", *table, "", *self._totals()]) + "\n"

    def to_markdown(self) -> str:
        lines = [f"# Port report: {self.model} on {self.backend}", ""]
        lines += [f"- {line}" for line in self._header()]
        lines += ["", "| " + " | ".join(self._COLUMNS) + " |",
                  "|" + "|".join("---:" if i in self._RIGHT else "---" for i in range(len(self._COLUMNS))) + "|"]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.ops]
        lines += [""] + [f"- {line}" if not line.startswith("  ") else f"  {line}" for line in self._totals()]
        return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# --- running it -------------------------------------------------------------------------------
def port_report(model_dir: str, backend=None, *, prompt: str = DEFAULT_PROMPT, new_tokens: int = 16,
                dtype=None, reference=None, fp8=None) -> PortReport:
    """Run `prompt` + `new_tokens` greedy tokens through the model on `backend` and report.

    `dtype` casts the model's weights on the target (None keeps the checkpoint's); the
    reference backend (default: accel's reference) always runs the checkpoint as stored.
    A failure on the target (an op the backend refuses) ends the run early: the report then
    holds the ops seen up to the failure and the error, and `ok` is False.
    """
    from accel.models import load_pretrained

    target = get_backend(backend)
    ref = reference_backend() if reference is None else get_backend(reference)
    ref_model = load_pretrained(model_dir, backend=ref)
    ids = ref_model.tokenizer.encode(prompt) if ref_model.tokenizer is not None else list(range(1, 9))
    ref_logits = ref_model.forward(ids).numpy().astype(np.float64)
    ref_tokens = ref_model.generate(ids, new_tokens, stop_at_eos=False)

    profiler = OpProfiler(target)
    before = dispatch.stats.snapshot().get(target.spec, {})
    error, model, logits, tokens, caught, after = None, None, None, None, [], before
    start = end = profiler.now()
    target.reset_counters()  # so the device counters cover this run: load, check, generation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_pretrained(model_dir, backend=target, dtype=dtype, fp8=fp8)
            precision.reset_layer_stats()
            before = dispatch.stats.snapshot().get(target.spec, {})
            start = profiler.now()
            try:  # profiled first, so an op the backend refuses shows up in the table
                with profiler:
                    tokens = model.generate(ids, new_tokens, stop_at_eos=False)
            finally:
                end = profiler.now()
                after = dispatch.stats.snapshot().get(target.spec, {})
            logits = model.forward(ids).numpy().astype(np.float64)
        except AccelError as exc:
            error = str(exc)
            if model is None:
                after = before

    total = end - start
    rows = _rows(profiler, before, after, total, target)
    inside = sum(r.own_time for r in rows)
    check = None
    if error is None:
        check = _check(ref.spec, ref_model, logits, ref_logits, tokens, ref_tokens, len(ids))
    counters = target.counters()
    messages = tuple(dict.fromkeys(str(w.message) for w in caught))
    facts = target.device_facts()
    return PortReport(
        backend=target.spec, device=str(facts.get("device_name", target.device)), model=model_dir,
        model_summary=repr(model or ref_model).strip("<>"),
        dtype=(model.dtype.name if model is not None else str(dtype or ref_model.dtype.name)),
        prompt=prompt, new_tokens=new_tokens, clock="simulated" if profiler.simulated else "wall",
        total_time=total, outside_ops_time=max(total - inside, 0.0), ops=tuple(rows), check=check,
        counters=counters, warnings=messages, error=error, fp8_layers=precision.layer_stats())


def _rows(profiler: OpProfiler, before: dict, after: dict, total: float, backend) -> list[OpRow]:
    rows = []
    total = total or 1.0
    order = {d: i for i, d in enumerate(ALL_DTYPES)}
    for name, t in profiler.timings.items():
        delta = {k: after.get(name, {}).get(k, 0) - before.get(name, {}).get(k, 0) for k in _HOW[1:4]}
        op = BY_NAME.get(name)
        native = max(t.calls - sum(delta.values()) - t.failed, 0)
        dtypes = sorted(t.dtypes, key=order.__getitem__)
        note = _why(backend, op, dtypes) if op is not None and native < t.calls else ""
        rows.append(OpRow(name, op.kind if op is not None else "?", t.calls, native, delta["decomposed"],
                          delta["fallback"], delta["downcast"], t.own, t.total, t.own / total,
                          t.total / total, tuple(d.name for d in dtypes), t.failed, note))
    rows.sort(key=lambda r: (-r.own_time, -r.total_time, r.op))
    return rows


def _why(backend, op, dtypes) -> str:
    """What the backend declares that made `op` leave its native path (capabilities are data)."""
    if op not in backend.kernels:
        return "no kernel" + (" (composite: decomposes)" if op.decompose is not None else "")
    missing = [d.name for d in dtypes if not backend.supports(op, d)]
    if missing:
        have = backend.op_dtypes.get(op, backend.dtypes)
        return f"kernel lacks {', '.join(missing)} (has {', '.join(d.name for d in have)})"
    return ""


def _check(ref_spec, ref_model, logits, ref_logits, tokens, ref_tokens, prompt_tokens) -> ModelCheck:
    diff = np.abs(logits - ref_logits)
    finite = np.isfinite(diff)
    max_dev = float(diff.max()) if finite.all() else float("inf")
    nmse = nmse_of(logits, ref_logits)
    matches = sum(a == b for a, b in zip(tokens, ref_tokens))
    first = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens)) if a != b), None)
    return ModelCheck(ref_spec, ref_model.dtype.name, prompt_tokens, max_dev,
                      float(np.abs(ref_logits).max()), nmse, matches, len(ref_tokens), first,
                      tuple(tokens), tuple(ref_tokens))
