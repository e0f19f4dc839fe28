"""`accel port-report`: how a model runs on a backend, op by op, against the reference backend."""
from __future__ import annotations

import os

from accel.core.errors import AccelError, BackendError


def register(sub) -> None:
    p = sub.add_parser(
        "port-report", help="run a model on a backend and report per-op coverage, time and accuracy",
        description="Run a prompt through a model on BACKEND and report, for every op the model uses, "
                    "the calls, native / decomposed / host fallback / downcast, and its share of the "
                    "time (simulated on npusim, wall clock elsewhere); then the max logit deviation and "
                    "greedy-token agreement against the reference backend.")
    p.add_argument("--model", help="model directory (config.json, model.safetensors, tokenizer.json); "
                                   "default: the bundled model")
    p.add_argument("--backend", help="backend to report on, e.g. npusim, npusim:minimal, torch:cuda "
                                     "(default: the current backend)")
    p.add_argument("--prompt", default=None, help="prompt text (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=16, help="greedy tokens to generate (default: 16)")
    p.add_argument("--dtype", help="cast the weights on the target, e.g. bfloat16 (default: as stored)")
    p.add_argument("--reference", help="backend to compare against (default: the reference backend)")
    p.add_argument("--fp8", metavar="POLICY", help="run the layers of an `accel fp8-plan` policy in FP8")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, repeatable: a keyword argument of the backend's configure(), "
                        "which declares its options (an unknown KEY is refused, naming the backend's "
                        "options); e.g. npusim: dtype_policy, memory_capacity, fault_at, fault_rate, "
                        "fault_seed; torch: scaled_mm=auto|native|emulate")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown")
    p.set_defaults(run=run)


def run(args) -> int:
    import accel
    from accel.porting.report import DEFAULT_PROMPT, port_report

    model_dir = args.model
    if model_dir is None:
        import accel.models

        model_dir = accel.models.bundled_path()
    backend = accel.get_backend(args.backend)
    if args.set:
        options = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise AccelError(f"--set expects KEY=VALUE, got {item!r}", hint="e.g. --set dtype_policy=fallback")
            options[key.strip()] = None if value.strip().lower() == "none" else value.strip()
        _refuse_unknown_options(backend, options)
        try:
            backend.configure(**options)
        except TypeError as exc:
            raise BackendError(f"--set: {backend.spec} does not take {exc}",
                               hint="see the backend's configure() for its options") from None
    report = port_report(model_dir, backend, prompt=args.prompt or DEFAULT_PROMPT,
                         new_tokens=args.new_tokens, dtype=args.dtype, reference=args.reference,
                         fp8=args.fp8)
    print(report.to_text(), end="")
    for path, text in ((args.json, report.to_json), (args.markdown, report.to_markdown)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text())
            print(f"wrote {path}")
    return 0 if report.ok else 1


def configure_options(backend) -> tuple[str, ...] | None:
    """The options `backend.configure()` declares: its named keyword parameters. None when it
    takes any keyword (`**options`, as the contract's default does): configure() judges those."""
    import inspect

    params = inspect.signature(backend.configure).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def _refuse_unknown_options(backend, options: dict) -> None:
    known = configure_options(backend)
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if unknown:
        raise BackendError(f"--set: {backend.spec} has no option {', '.join(unknown)}",
                           hint=f"its configure() takes: {', '.join(known)}" if known
                           else "this backend takes no options")
