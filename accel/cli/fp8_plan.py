"""`accel fp8-plan`: measure each linear layer's FP8 sensitivity and write a policy JSON.

    accel fp8-plan --model DIR [--data FILE] [--budget 0.005] [--out policy.json]
"""
from __future__ import annotations

import os


def register(sub) -> None:
    from accel.precision import DEFAULT_BUDGET, DEFAULT_RECIPES, RECIPES

    p = sub.add_parser("fp8-plan", help="measure which linear layers can run in FP8 and write a policy")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (config.json, model.safetensors)")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="UTF-8 calibration text (default: the corpus shipped with accel)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="allowed relative loss increase summed over the FP8 layers (default: %(default)s)")
    p.add_argument("--out", default="fp8_policy.json", help="policy file to write (default: %(default)s)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help=f"candidate recipes, cheapest first (known: {', '.join(RECIPES)}; default: %(default)s)")
    p.add_argument("--allow-first-last", action="store_true",
                   help="measure the first and last transformer blocks too (default: kept in bfloat16)")
    p.add_argument("--deny", action="append", default=[], metavar="SUBSTRING",
                   help="keep layers whose name contains this in bfloat16 (repeatable)")
    p.add_argument("--batches", type=int, default=4, help="calibration batches (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="backend to measure on (default: auto-detect)")
    p.set_defaults(run=run)


def run(args) -> int:
    import accel
    from accel import precision
    from accel.cli.train import default_data
    from accel.models import load_pretrained

    if args.batches < 1 or args.batch_size < 1 or args.seq_len < 2:
        raise accel.AccelError(f"--batches {args.batches}, --batch-size {args.batch_size}, --seq-len {args.seq_len}: "
                               f"each must be at least 1 (seq-len 2)", hint="e.g. --batches 4 --batch-size 4 --seq-len 64")
    recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    for r in recipes:
        precision.get_recipe(r)
    model = load_pretrained(args.model, backend=args.backend)
    data = args.data or default_data()
    batches = precision.calibration_batches(model, data, args.batches, args.batch_size, args.seq_len, args.seed)
    policy = precision.plan(model, batches, recipes=recipes, budget=args.budget,
                            allow_first_last=args.allow_first_last, deny=tuple(args.deny))
    planner = dict(policy.planner, model_dir=os.path.abspath(args.model), data=os.path.abspath(data))
    policy = precision.Policy(policy.layers, policy.model_layers, policy.model_type, planner, args.out)
    policy.save(args.out)
    s = policy.summary()
    print(f"{args.out}: {s['fp8_layers']} of {s['linear_layers']} linear layers in FP8 "
          f"({', '.join(f'{k} {v}' for k, v in s['by_recipe'].items())}); budget used "
          f"{planner['budget_used']:.3g} of {planner['budget']:g}; baseline loss {planner['baseline_loss']:.4g}")
    for name, c in policy.layers.items():
        print(f"  {name:<40} {c.recipe or c.format:<20} {'' if c.score is None else f'{c.score:.3g}':>10}  {c.reason.split(':')[0]}")
    return 0
