"""`accel generate`: stream text from a model directory (default: the bundled model)."""
from __future__ import annotations

import sys

import accel


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a Llama-family model, streaming it")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="Hugging Face model directory (default: the bundled model)")
    p.add_argument("--backend", default=None, help="e.g. numpy, torch:cuda:0 (default: auto-detect)")
    p.add_argument("--prompt", default="Hello", help="text to continue (default: %(default)r)")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed: same seed, same text on every backend")
    p.add_argument("--dtype", default=None, help="cast the weights, e.g. bfloat16 (default: as stored)")
    p.add_argument("--compile", action="store_true",
                   help="run prefill and decode as compiled graphs (accel.compile; one trace per shape)")
    p.add_argument("--fp8", default=None, metavar="POLICY",
                   help="run the layers an `accel fp8-plan` policy names in FP8 (weights stored in float8)")
    p.set_defaults(run=run)


def run(args) -> int:
    import accel.models
    from accel.io.tokenizer import require_text

    from accel.io.sampling import Sampler

    # Bad text or sampling settings fail before anything is loaded or printed.
    require_text(args.prompt, "--prompt")
    Sampler(args.temperature, args.top_k, args.top_p, args.seed)

    model = accel.models.load_pretrained(args.model or accel.models.bundled_path(),
                                         backend=args.backend, dtype=args.dtype, fp8=args.fp8)
    if model.tokenizer is None:
        raise accel.ModelError(f"{args.model} has no tokenizer.json", hint="accel generate needs text in and out")
    if args.compile:
        model.compile()

    started = []

    def show(piece: str) -> None:
        if not started:  # the prompt goes out with the first new text: an error prints alone
            started.append(sys.stdout.write(args.prompt))
        sys.stdout.write(piece)
        sys.stdout.flush()

    model.generate_text(args.prompt, args.max_new_tokens, stream=show, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if not started:
        sys.stdout.write(args.prompt)
    sys.stdout.write("\n")
    s = model.last_generation
    if s is not None:
        seed = f", seed {s.seed}" if s.seed is not None else ""
        print(f"[{s.new_tokens} tokens, {s.tokens_per_s:.1f} tokens/s (decode {s.decode_tokens_per_s:.1f}/s) "
              f"on {model.backend.spec}, {model.dtype.name}{', compiled' if args.compile else ''}{seed}]", file=sys.stderr)
    return 0
