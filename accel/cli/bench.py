"""`accel bench`: backends side by side against native libraries, Hugging Face and the roofline.

    accel bench [--quick] [--backend torch:cpu --backend jax:cpu ...] [--section model ...]
                [--dtype float32 ...] [--mode eager|compiled] [--repeats 5] [--out bench-results]

Writes bench.json, bench.md and PNG charts into --out and prints the Markdown tables. --quick
runs a ~4M-parameter model, float32, 3 repetitions: under two minutes on two CPU cores.
"""
from __future__ import annotations

import os
import sys


def register(sub) -> None:
    from accel.bench.settings import SECTIONS

    p = sub.add_parser("bench", help="benchmark backends side by side (ops, model, roofline, training)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a run under two minutes (small model, float32)")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="backend to measure (repeatable; default: every available one)")
    p.add_argument("--section", action="append", default=[], choices=SECTIONS,
                   help="only this section (repeatable; default: all)")
    p.add_argument("--dtype", action="append", default=[], metavar="DTYPE",
                   help="model dtype (repeatable; default float32 and bfloat16, --quick float32)")
    p.add_argument("--mode", action="append", default=[], choices=("eager", "compiled"),
                   help="eager and/or compiled (default: both)")
    p.add_argument("--compiler", action="append", default=[], metavar="MODE",
                   help="graph compiler of compiled rows on a backend that has several (torch: python, "
                        "inductor; repeatable; default: both)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repetitions (median; default 5, quick 3)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens per timed decode")
    p.add_argument("--row-budget", type=float, default=None, metavar="S",
                   help="skip a row whose warm-up takes longer than this many seconds")
    p.add_argument("--interpreter", action="store_true",
                   help="also time compiled rows on backends without a graph compiler (graph interpreter)")
    p.add_argument("--no-hf", action="store_true", help="leave out the Hugging Face transformers reference")
    p.add_argument("--out", default="bench-results", metavar="DIR", help="results folder (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from accel.core.host_threads import quiet_thread_pools

    threads = quiet_thread_pools()  # before any backend imports torch
    import accel
    from accel.bench import report
    from accel.bench.runner import run as run_bench
    from accel.bench.settings import BenchSettings

    overrides = {}
    if args.backend:
        overrides["backends"] = tuple(args.backend)
    if args.section:
        overrides["sections"] = tuple(dict.fromkeys(args.section))
    if args.dtype:
        overrides["dtypes"] = tuple(accel.as_dtype(d).name for d in args.dtype)
    if args.mode:
        overrides["modes"] = tuple(dict.fromkeys(args.mode))
    if args.compiler:
        overrides["graph_compilers"] = tuple(dict.fromkeys(args.compiler))
    if args.repeats is not None:
        if args.repeats < 1:
            raise accel.AccelError(f"--repeats must be >= 1, got {args.repeats}", hint="use 5 or more for a median")
        overrides["repeats"] = overrides["train_repeats"] = args.repeats
    if args.decode_tokens is not None:
        if args.decode_tokens < 2:
            raise accel.AccelError(f"--decode-tokens must be >= 2, got {args.decode_tokens}",
                                   hint="the first new token comes from the prefill; decode needs at least one more")
        overrides["decode_tokens"] = args.decode_tokens
    if args.row_budget is not None:
        if not args.row_budget > 0:
            raise accel.AccelError(f"--row-budget must be > 0 seconds, got {args.row_budget}",
                                   hint="e.g. --row-budget 60 (leave it out for the default)")
        overrides["row_budget_s"] = args.row_budget
    if args.interpreter:
        overrides["interpreter_rows"] = True
    if args.no_hf:
        overrides["hf"] = False
    try:  # the results folder, made before the run rather than failing after it
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise accel.AccelError(f"cannot make the results folder --out {args.out}: {exc.strerror or exc}",
                               hint="name a folder you can write to (not an existing file)") from None
    settings = BenchSettings.quick_run(**overrides) if args.quick else BenchSettings(**overrides)
    results = run_bench(settings, progress=not args.no_progress)
    results["machine"]["thread_policy"] = threads
    paths = report.write(results, args.out)
    print(report.markdown(results))
    print("wrote " + ", ".join(paths), file=sys.stderr)
    return 0
