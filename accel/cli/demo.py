"""`accel demo`: the bundled model on every available backend (one device each).

For each backend: the generated text, tokens/s, the max |logit difference| against the reference
backend on the same tokens, and how the ops ran (native / decomposed / host fallback).
"""
from __future__ import annotations

import sys
import time
import warnings

import accel


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the bundled model on every available backend and compare")
    p.add_argument("--model", default=None, metavar="DIR", help="model directory (default: the bundled model)")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="only these backends (repeatable; default: every available one)")
    p.set_defaults(run=run)


def demo_backends() -> list[str]:
    """One spec per available backend: its CPU device where it has one, else its first device."""
    names = []
    for name, status in accel.available_backends().items():
        if not status.available:
            continue
        if accel.backend_class_is_cpu_only(name) or not status.devices:
            names.append(name)
        else:
            names.append(f"{name}:{'cpu' if 'cpu' in status.devices else status.devices[0]}")
    return names


def _max_abs_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _stats_line(spec: str) -> str:
    counts = accel.dispatch_stats().get(spec, {})
    native = sum(c["native"] for c in counts.values())
    decomposed = {op: c["decomposed"] for op, c in counts.items() if c["decomposed"]}
    fallback = {op: c["fallback"] for op, c in counts.items() if c["fallback"]}
    downcast = sum(c["downcast"] for c in counts.values())
    parts = [f"decomposed {sum(decomposed.values())} calls ({', '.join(sorted(decomposed)) or '-'})",
             f"host fallback {sum(fallback.values())} calls ({', '.join(sorted(fallback)) or '-'})"]
    if native:
        parts.insert(0, f"native {native}")
    if downcast:
        parts.append(f"downcast {downcast}")
    return "; ".join(parts)


def run(args) -> int:
    from accel.core.host_threads import quiet_thread_pools

    quiet_thread_pools()  # several libraries share two cores here: idle threads must sleep
    import accel.models

    from accel.io.tokenizer import require_text

    # What fails on every backend alike fails once, here, before any backend runs.
    require_text(args.prompt, "--prompt")
    if args.max_new_tokens < 1:
        raise accel.ModelError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}",
                               hint="e.g. --max-new-tokens 20")
    path = args.model or accel.models.bundled_path()
    accel.models.LlamaConfig.from_file(path)  # a missing or broken model directory
    statuses = accel.available_backends()
    for name, status in statuses.items():
        if not status.available:
            print(f"{name}: unavailable ({status.reason})")
    reference = accel.reference_backend()
    # The reference runs first: every other backend is compared with it.
    specs = [reference.spec] + [s for s in (args.backend or demo_backends()) if accel.get_backend(s) is not reference]
    ref_logits, ref_tokens, failures = None, None, 0
    for spec in specs:
        print(f"\n== {spec}")
        try:
            backend = accel.get_backend(spec)
            accel.reset_dispatch_stats()
            # Fallbacks and decompositions are listed in the "ops:" line below, not warned one by one.
            warnings.simplefilter("ignore", accel.AccelWarning)
            model = accel.models.load_pretrained(path, backend=backend, dtype="float32")
            prompt_ids = model.tokenizer.encode(args.prompt)
            start = time.perf_counter()
            model.generate(prompt_ids, 3)  # warm-up: backends that compile per shape do it here
            warmup = time.perf_counter() - start
            start = time.perf_counter()
            new_ids = model.generate(prompt_ids, args.max_new_tokens)
            elapsed = time.perf_counter() - start
            stats = model.last_generation
            text = model.tokenizer.decode(new_ids)
            print(f"   text: {args.prompt}{text}")
            print(f"   speed: {len(new_ids)} tokens in {elapsed:.2f} s = {len(new_ids) / elapsed:.1f} tokens/s "
                  f"(decode {stats.decode_tokens_per_s:.1f} tokens/s; warm-up of 3 tokens took {warmup:.2f} s)")
            # Logits on one fixed token sequence (the reference's), so the comparison is like for like.
            if ref_tokens is None:
                ref_tokens = prompt_ids + new_ids
            logits = model.forward([ref_tokens]).numpy()
            if ref_logits is None:
                ref_logits = logits
                print(f"   max |logit diff| vs {reference.spec}: 0 (this is the reference)")
            else:
                same = "same" if new_ids == ref_tokens[len(prompt_ids):] else "DIFFERENT"
                print(f"   max |logit diff| vs {reference.spec}: {_max_abs_diff(logits, ref_logits):.3g} "
                      f"({same} greedy tokens)")
            print(f"   ops: {_stats_line(backend.spec)}")
        except accel.AccelError as exc:
            failures += 1
            print(f"   FAILED: {exc}")
        except Exception as exc:  # one broken backend must not hide the others' results
            failures += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}")
    sys.stdout.flush()
    return 1 if failures else 0
