"""Training section, embedding gradient: the one-hot matmul accel used to build against the
`index_add` scatter-add it uses now, at vocabularies of 32k and 128k.

The gradient of `embedding(W, ids)` (and of `gather`) adds the incoming rows g (N tokens x D)
into the rows of W they were read from. As a one-hot matmul that is onehot(ids)^T @ g: an N x V
one-hot matrix (bool, then float) and 2·N·V·D FLOPs; as a scatter-add it is N·D additions into a
V x D zero matrix, which both forms must produce. Memory is measured where it can be (numpy:
tracemalloc sees every array; CUDA: the allocator's peak) and computed from the shapes otherwise.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

import accel
from accel import ops
from accel.bench.machine import wait
from accel.bench.timing import Case

VOCABS = (32000, 128000)
FORMS = ("one-hot matmul", "index_add")


def onehot_grad(g, ids, vocab: int):
    """What the embedding VJP computed before index_add: onehot(ids)^T @ g, (V, D)."""
    classes = ops.arange(vocab, dtype=ids.dtype, backend=g.backend)
    onehot = ops.cast(ops.eq(ops.reshape(ids, (-1, 1)), classes), g.dtype)     # (N, V)
    return ops.matmul(ops.transpose(onehot, 0, 1), g)                          # (V, D)


def scatter_grad(g, ids, vocab: int):
    """What it computes now: zeros (V, D) with g's rows added at ids."""
    return ops.index_add(ops.zeros((vocab, g.shape[1]), g.dtype, g.backend), ids, g, 0)


def _inputs(backend, tokens: int, dim: int, vocab: int, seed: int):
    rng = np.random.default_rng(seed + 3)
    g = accel.from_numpy(rng.standard_normal((tokens, dim)).astype(np.float32), backend)
    ids = accel.from_numpy(rng.integers(0, vocab, tokens, dtype=np.int64), backend)
    return g, ids


def intermediate_bytes(form: str, tokens: int, vocab: int) -> int:
    """Bytes a form allocates beyond the (V, D) result: the bool and float32 one-hot matrices."""
    return tokens * vocab * (1 + 4) if form == FORMS[0] else 0


def measured_peak(backend, fn) -> int | None:
    """Peak bytes allocated while fn runs, where the backend's allocator can be read."""
    if backend.spec == "numpy":
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    if backend.spec.startswith("torch:cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return None


def build_scatter_cases(backends, settings) -> tuple[list[dict], list[Case]]:
    tokens, dim = settings.scatter_tokens, settings.scatter_dim
    rows, cases = [], []
    for backend in backends:
        for vocab in VOCABS:
            g, ids = _inputs(backend, tokens, dim, vocab, settings.seed)
            results = {}
            for form, fn in zip(FORMS, (onehot_grad, scatter_grad)):
                def step(fn=fn, vocab=vocab, g=g, ids=ids, results=results, form=form) -> float:
                    start = time.perf_counter()
                    out = fn(g, ids, vocab)
                    wait(out)
                    elapsed = time.perf_counter() - start
                    results[form] = out
                    return elapsed

                key = f"train/embedding-grad/{backend.spec}/V{vocab}/{form}"
                case = Case(key, step, key, settings.row_budget_s)
                cases.append(case)
                rows.append({"backend": backend.spec, "vocab": vocab, "tokens": tokens, "dim": dim,
                             "form": form, "case": case, "results": results,
                             "intermediate_bytes": intermediate_bytes(form, tokens, vocab),
                             "peak": (backend, fn, g, ids, vocab)})
    return rows, cases


def summarise_scatter(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        entry = {k: r[k] for k in ("backend", "vocab", "tokens", "dim", "form", "intermediate_bytes")}
        entry.update(r["case"].summary())
        backend, fn, g, ids, vocab = r["peak"]
        if "median_s" in entry:
            entry["peak_bytes"] = measured_peak(backend, lambda: wait(fn(g, ids, vocab)))
        done = r["results"]
        if len(done) == 2:  # both forms ran: they must give the same gradient
            a, b = (np.asarray(done[f].numpy(), dtype=np.float64) for f in FORMS)
            entry["max_abs_diff_between_forms"] = float(np.max(np.abs(a - b))) if a.size else 0.0
        out.append(entry)
    for entry in out:
        base = next((e for e in out if e["backend"] == entry["backend"] and e["vocab"] == entry["vocab"]
                     and e["form"] == FORMS[0] and "median_s" in e), None)
        if base and "median_s" in entry:
            entry["speedup_vs_onehot"] = base["median_s"] / entry["median_s"]
    return out
