"""Model section: prefill and decode tokens/s per (backend, dtype, mode), and Hugging Face.

Every row holds the same weights: they are drawn once on the host (float32, Philox, as
`LlamaModel.random` draws them) and cast per row, so rows differ only in how they compute.
Measurements per row, cheapest first (a row whose warm-up overruns its budget stops early):

    prefill-128, prefill-512   one prompt of T tokens, generate 1 token: T / seconds
    decode-b1, decode-b8       B prompts of `decode_prompt` tokens, generate `decode_tokens`;
                               (decode_tokens - 1) * B / seconds of the steps after the first token
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

import accel
from accel import ops
from accel.core import dispatch
from accel.core.backend import Backend
from accel.bench import hf_reference
from accel.bench.timing import Case


@dataclass
class Row:
    """One line of the model table: who computes, and its measurements."""

    name: str                    # e.g. "torch:cpu float32 eager", "HF transformers float32"
    backend: str
    dtype: str
    mode: str                    # eager | compiled | hf
    runner: str = ""
    cases: dict[str, Case] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)   # tokens per measurement
    counts: dict = field(default_factory=dict)              # fallbacks/decompositions while it ran
    tokens_out: dict[str, list] = field(default_factory=dict)  # the ids each measurement generated
    skipped: str | None = None


def host_params(config, seed: int) -> dict[str, np.ndarray]:
    from accel.models.llama import init_params

    return {k: v.numpy() for k, v in init_params(config, seed, "numpy", accel.float32).items()}


def measurements(settings) -> list[tuple[str, int, int, int]]:
    """(label, batch, prompt length, new tokens), cheapest first."""
    p = [(f"prefill-{t}", 1, t, 1) for t in sorted(settings.prompt_lengths)]
    d = [(f"decode-b{b}", b, settings.decode_prompt, settings.decode_tokens) for b in sorted(settings.decode_batches)]
    return [p[0], *d[:1], *p[1:], *d[1:]]


def prompts(config, settings) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(settings.seed + 1)
    return {label: rng.integers(1, config.vocab_size, (b, t), dtype=np.int64)
            for label, b, t, _ in measurements(settings)}


def has_graph_compiler(backend) -> bool:
    return type(backend).compile is not Backend.compile


def graph_compilers(backend, settings) -> tuple:
    """The graph compiler modes to time on a backend that has several (torch: generated code
    and inductor); (None,) for a backend with one way to compile."""
    chosen = tuple(m for m in settings.graph_compilers if m in backend.graph_compilers)
    return chosen or (None,)


@contextlib.contextmanager
def using_compiler(backend, compiler: str | None):
    """Graphs traced inside compile with `compiler` (the backend reads it at trace time)."""
    if compiler is None:
        yield
        return
    before = backend.graph_compiler
    backend.set_graph_compiler(compiler)
    try:
        yield
    finally:
        backend.graph_compiler = before


def accel_row(config, host: dict, backend, dtype: str, mode: str, settings, ids: dict,
              compiler: str | None = None) -> Row:
    from accel.models import LlamaModel

    row = Row(f"{backend.spec} {dtype} {mode}" + (f" ({compiler})" if compiler else ""), backend.spec, dtype, mode)
    target = accel.as_dtype(dtype)
    params = {k: _on(backend, v, target) for k, v in host.items()}
    model = LlamaModel(config, params, backend)
    if mode == "compiled":
        model.compile()
        row.runner = "graph compiler" if has_graph_compiler(backend) else "graph interpreter"
        row.runner += f": {compiler}" if compiler else ""
    else:
        row.runner = "eager dispatch"
    group = f"model/{row.name}"
    budget = settings.row_budget_s * (settings.inductor_budget_factor if compiler == "inductor" else 1)
    for label, batch, t, new in measurements(settings):
        prompt = ids[label].tolist()

        def run(prompt=prompt, new=new, prefill=label.startswith("prefill")) -> float:
            before = _counts(backend.spec)
            with using_compiler(backend, compiler):
                row.tokens_out[label] = model.generate(prompt, new, stop_at_eos=False)
            _add_counts(row.counts, before, _counts(backend.spec))
            s = model.last_generation
            return s.prefill_s if prefill else s.decode_s

        row.cases[label] = Case(f"{group}/{label}", run, group, budget)
        row.tokens[label] = batch * t if label.startswith("prefill") else batch * (new - 1)
    return row


def hf_row(config, host: dict, dtype: str, settings, ids: dict, device: str = "cpu") -> Row:
    row = Row(f"HF transformers {dtype}", f"torch:{device}", dtype, "hf")
    why = hf_reference.available()
    if why:
        row.skipped = why
        return row
    model = hf_reference.HFModel(config, host, dtype, device)
    row.runner = f"generate, attn={model.attn}"
    group = f"model/{row.name}"
    for label, batch, t, new in measurements(settings):
        def run(prompt=ids[label], new=new, label=label) -> float:
            prefill_s, decode_s, row.tokens_out[label] = model.generate(prompt, new)
            return prefill_s if label.startswith("prefill") else decode_s

        row.cases[label] = Case(f"{group}/{label}", run, group, settings.row_budget_s)
        row.tokens[label] = batch * t if label.startswith("prefill") else batch * (new - 1)
    return row


def _not_measured(backend, dtype: str, mode: str, settings) -> str | None:
    if accel.as_dtype(dtype) not in backend.dtypes:
        return f"{backend.spec} does not list {dtype} among its dtypes"
    if mode == "compiled" and not has_graph_compiler(backend) and not settings.interpreter_rows:
        return "no graph compiler: compiled graphs run in the interpreter (--interpreter times them)"
    return None


def _on(backend, array: np.ndarray, dtype):
    t = accel.from_numpy(array, backend)
    return t if dtype is accel.float32 else ops.cast(t, dtype)


def _counts(spec: str) -> dict:
    return {op: dict(c) for op, c in dispatch.stats.snapshot().get(spec, {}).items()}


def _add_counts(total: dict, before: dict, after: dict) -> None:
    """Keep the largest per-generate count of each kind of non-native run (they repeat per call)."""
    for op, c in after.items():
        for kind in ("decomposed", "fallback", "downcast"):
            n = c.get(kind, 0) - before.get(op, {}).get(kind, 0)
            if n:
                key = f"{op}:{kind}"
                total[key] = max(total.get(key, 0), n)


def summarise(row: Row, settings, config, roofline: dict | None, hf: Row | None = None) -> dict:
    out = {"name": row.name, "backend": row.backend, "dtype": row.dtype, "mode": row.mode, "runner": row.runner}
    if hf is not None and hf is not row and row.tokens_out and hf.tokens_out:
        out["same_tokens_as_hf"] = agreement(row.tokens_out, hf.tokens_out)
    if row.skipped:
        out["skipped"] = row.skipped
    if row.counts:
        out["not_native"] = row.counts
    results = {}
    for label, case in row.cases.items():
        s = case.summary()
        entry = {"tokens": row.tokens[label], **{k: v for k, v in s.items() if k != "samples_s"},
                 "samples_s": s.get("samples_s", [])}
        if "median_s" in s:
            entry["tokens_per_s"] = row.tokens[label] / s["median_s"]
            if roofline:
                entry.update(_roofline_share(label, entry["tokens_per_s"], config, settings, row.dtype, roofline))
        results[label] = entry
    out["results"] = results
    if results and not row.skipped and all("tokens_per_s" not in e for e in results.values()):
        out["skipped"] = next(e["skipped"] for e in results.values() if e.get("skipped"))  # the first cause
    return out


def agreement(ours: dict[str, list], theirs: dict[str, list]) -> float:
    """Share of greedy tokens equal to the reference's, position by position, over all measurements
    both ran (1.0: the same text; float32 rows should agree, bfloat16 ones may drift apart)."""
    same = total = 0
    for label, rows in ours.items():
        other = theirs.get(label)
        if other is None:
            continue
        for a, b in zip(_rows(rows), _rows(other)):
            total += len(b)
            same += sum(x == y for x, y in zip(a, b))
    return same / total if total else float("nan")


def _rows(ids: list) -> list[list[int]]:
    return ids if ids and isinstance(ids[0], list) else [ids]


def _roofline_share(label: str, tok_s: float, config, settings, dtype: str, roofline: dict) -> dict:
    if label.startswith("prefill"):
        t = int(label.split("-")[1])
        achieved = prefill_flops(config, t) * tok_s / t / 1e9
        peak = roofline.get(f"matmul_gflops_{dtype}") or roofline.get("matmul_gflops_float32")
        return {"gflops": achieved, "pct_of_flop_bound": 100 * achieved / peak if peak else None}
    itemsize = accel.as_dtype(dtype).itemsize
    batch = int(label.split("-b")[1])
    step_bytes = decode_bytes(config, batch, settings.decode_prompt + settings.decode_tokens // 2, itemsize)
    bound = batch * roofline["bandwidth_gbs"] * 1e9 / step_bytes
    return {"bandwidth_bound_tokens_per_s": bound, "pct_of_bandwidth_bound": 100 * tok_s / bound}


def matmul_params(config) -> int:
    """Parameters read by matmuls each token: every weight except the embedding table (which is
    gathered, one row per token), plus the LM head (the table again when tied)."""
    shapes = config.param_shapes()
    total = sum(int(np.prod(s)) for name, s in shapes.items() if name != "model.embed_tokens.weight")
    if config.tie_word_embeddings:
        total += int(np.prod(shapes["model.embed_tokens.weight"]))
    return total


def prefill_flops(config, t: int) -> float:
    """Useful FLOPs of a T-token prefill: 2 per weight per token, plus causal attention
    (QK^T and AV over the T(T+1)/2 visible pairs, per head dim and head)."""
    heads_dim = config.num_attention_heads * (config.head_dim or config.hidden_size // config.num_attention_heads)
    return 2.0 * matmul_params(config) * t + 2.0 * 2 * config.num_hidden_layers * heads_dim * t * (t + 1) / 2


def decode_bytes(config, batch: int, cached: int, itemsize: int) -> float:
    """Bytes one decode step must read: the matmul weights once, plus each sequence's K and V."""
    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * cached * batch
    return (matmul_params(config) + kv) * itemsize


def build_rows(backends, settings) -> tuple[object, list[Row]]:
    from accel.models import LlamaConfig

    config = LlamaConfig(model_type="llama", rms_norm_eps=1e-5, initializer_range=0.02, **settings.model)
    host = host_params(config, settings.seed)
    ids = prompts(config, settings)
    rows: list[Row] = []
    # the reference runs where the torch rows run: on CUDA when the run measures torch:cuda
    hf_device = next((b.spec.split(":", 1)[1] for b in backends if b.spec.startswith("torch:cuda")), "cpu")
    for dtype in settings.dtypes:
        if settings.hf:
            rows.append(hf_row(config, host, dtype, settings, ids, hf_device))
        for backend in backends:
            for mode in settings.modes:
                why = _not_measured(backend, dtype, mode, settings)
                if why:
                    row = Row(f"{backend.spec} {dtype} {mode}", backend.spec, dtype, mode)
                    row.skipped = why
                    rows.append(row)
                    continue
                for compiler in graph_compilers(backend, settings) if mode == "compiled" else (None,):
                    rows.append(accel_row(config, host, backend, dtype, mode, settings, ids, compiler))
    return config, rows


