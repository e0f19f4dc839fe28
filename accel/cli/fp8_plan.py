"""`accel fp8-plan`: measure each linear layer's FP8 sensitivity and write a policy JSON.

    accel fp8-plan --model DIR [--data FILE] [--budget 0.005] [--out policy.json]
                   [--for training|inference] [--grad-nmse-max 0.03]
"""
from __future__ import annotations

import os


def register(sub) -> None:
    from accel.precision import DEFAULT_BUDGET, DEFAULT_RECIPES, RECIPES
    from accel.precision.planner import DEFAULT_GRAD_NMSE_MAX, PURPOSES

    p = sub.add_parser("fp8-plan", help="measure which linear layers can run in FP8 and write a policy")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (config.json, model.safetensors)")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="UTF-8 calibration text (default: the corpus shipped with accel)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="allowed relative loss increase summed over the FP8 layers (default: %(default)s)")
    p.add_argument("--for", dest="purpose", choices=PURPOSES, default="training",
                   help="training (default) also measures what each layer's FP8 does to every parameter "
                        "gradient (one forward+backward per layer, recipe and batch) and keeps a layer out "
                        "whose FP8 damages one; inference decides on the loss estimate alone (faster, "
                        "possibly more layers in FP8; such a policy is not checked for training)")
    p.add_argument("--grad-nmse-max", type=float, default=DEFAULT_GRAD_NMSE_MAX,
                   help="--for training: largest NMSE a layer's FP8 may put on any parameter's gradient "
                        "(default: %(default)s)")
    p.add_argument("--out", default="fp8_policy.json", help="policy file to write (default: %(default)s)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help=f"candidate recipes, cheapest first (known: {', '.join(RECIPES)}; default: %(default)s)")
    p.add_argument("--allow-first-last", action="store_true",
                   help="measure the first and last transformer blocks too (default: kept in bfloat16)")
    p.add_argument("--allow-attention", action="store_true",
                   help="--for training: measure the attention projections too (default: kept in bfloat16, "
                        "docs/fp8.md)")
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
                            allow_first_last=args.allow_first_last, deny=tuple(args.deny),
                            purpose=args.purpose, grad_nmse_max=args.grad_nmse_max,
                            allow_attention=args.allow_attention)
    planner = dict(policy.planner, model_dir=os.path.abspath(args.model), data=os.path.abspath(data))
    policy = precision.Policy(policy.layers, policy.model_layers, policy.model_type, planner, args.out)
    policy.save(args.out)
    s = policy.summary()
    gate = planner.get("grad_nmse_max")
    by_grads = sum(c.reason.startswith("sensitive (gradients)") for c in policy.layers.values())
    print(f"{args.out}: {s['fp8_layers']} of {s['linear_layers']} linear layers in FP8 "
          f"({', '.join(f'{k} {v}' for k, v in s['by_recipe'].items())}); budget used "
          f"{planner['budget_used']:.3g} of {planner['budget']:g}; "
          + (f"gradient NMSE limit {gate:g}: {by_grads} kept out by it, worst FP8 layer alone "
             f"{_worst_fp8(policy):.3g}, {_whole(planner)}; " if gate is not None
             else "for inference (gradients not measured); ")
          + f"baseline loss {planner['baseline_loss']:.4g}")
    print(f"  {'layer':<40} {'recipe':<20} {'loss est.':>10}"
          + (f"{'grad NMSE':>10}  {'worst gradient':<34}" if gate is not None else "") + "  decision")
    for name, c in policy.layers.items():
        print(f"  {name:<40} {c.recipe or c.format:<20} {'' if c.score is None else f'{c.score:.3g}':>10}"
              f"{_gradient_column(c) if gate is not None else ''}  {c.reason.split(':')[0]}")
    return 0


def _shown(c):
    """The recipe whose gradient figures a layer's line shows: its own, or for a layer kept out,
    the one that damages the gradients least."""
    if c.recipe is not None:
        return c.detail.get(c.recipe)
    measured = [d for d in c.detail.values() if "grad_nmse_worst" in d]
    return min(measured, key=lambda d: d["grad_nmse_worst"]) if measured else None


def _gradient_column(c) -> str:
    d = _shown(c)
    if d is None:
        return f"{'':>10}  {'':<34}"
    return f"{d['grad_nmse_worst']:>10.3g}  {d['grad_worst_tensor'].removeprefix('model.'):<34}"


def _whole(planner: dict) -> str:
    whole = planner.get("policy_gradients")
    if not whole:
        return "no layer in FP8"
    return f"all FP8 layers together {whole['grad_nmse_worst']:.3g} on {whole['grad_worst_tensor']}"


def _worst_fp8(policy) -> float:
    return max((c.detail[c.recipe]["grad_nmse_worst"] for c in policy.layers.values() if c.is_fp8), default=0.0)
