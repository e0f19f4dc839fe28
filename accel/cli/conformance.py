"""`accel conformance`: run the conformance suite on a backend and say what passes.

    accel conformance --backend torch:cpu [--op softmax --op matmul] [--dtype bfloat16]
                      [--against jax:cpu] [--json report.json] [--markdown report.md] [--quick]

Exit status 1 on any failure (including an expected failure that now passes).
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("conformance", help="run the op conformance suite on a backend",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", required=True, metavar="NAME", help="backend to judge, e.g. numpy, torch:cpu")
    p.add_argument("--op", action="append", default=[], metavar="OP", help="only this op (repeatable)")
    p.add_argument("--dtype", action="append", default=[], metavar="DTYPE", help="only this dtype (repeatable)")
    p.add_argument("--against", metavar="OTHER",
                   help="compare with another backend directly instead of the numpy float64 reference")
    p.add_argument("--json", metavar="FILE", help="write one JSON row per case")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    p.add_argument("--quick", action="store_true",
                   help="leave out the big sizes (1025 and 4096 on an axis)")
    p.add_argument("--ci", action="store_true",
                   help="the CI subset: --quick, and composites the backend decomposes only in "
                        "float32/bfloat16 (their decomposition is checked in every dtype on numpy)")
    p.add_argument("--expectations", metavar="FILE",
                   help="known failures (TOML); default: accel/conformance/expectations/<backend>.toml")
    p.add_argument("--model", choices=("auto", "skip"), default="auto",
                   help="model-level check on the bundled model (auto: run when it is available)")
    p.add_argument("--onnx", action="store_true",
                   help="also run ONNX's own node test cases through accel (the external oracle)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    import accel
    from accel.conformance import report
    from accel.conformance.expectations import Expectations
    from accel.conformance.runner import run_suite

    backend = accel.get_backend(args.backend)
    against = accel.get_backend(args.against) if args.against else None
    expectations = Expectations.load(args.expectations) if args.expectations else None
    result = run_suite(backend, op_names=args.op or None, dtype_names=args.dtype or None, quick=args.quick,
                       ci=args.ci, against=against, expectations=expectations,
                       progress=not args.no_progress and sys.stderr.isatty())
    if args.model == "auto" and not args.op and not args.dtype:
        from accel.conformance.model_check import check_model

        result.model = check_model(backend, against=against, quick=args.quick or args.ci)
    if args.onnx:
        from accel.conformance import onnx_oracle

        rows = onnx_oracle.run_oracle(backend)
        result.onnx = {"table": onnx_oracle.table(rows), "ran": sum(onnx_oracle.ran_per_op(rows).values()),
                       "ops": len(onnx_oracle.ran_per_op(rows)),
                       "failed": sum(1 for r in rows if r.status == "fail"),
                       "rows": [r.__dict__ for r in rows]}
    if args.json:
        report.write_json(result, args.json)
    if args.markdown:
        report.write_markdown(result, args.markdown)
    print(report.terminal(result))
    return 0 if result.ok else 1
