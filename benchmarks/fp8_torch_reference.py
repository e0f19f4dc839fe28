"""FP8 against bfloat16 training of the "small" preset in plain torch: an independent check of
accel's FP8 training gap (docs/fp8.md), sharing no FP8 code with accel.

The model is transformers' LlamaForCausalLM built from the preset's sizes; the FP8 arm replaces
every decoder-layer nn.Linear by the plain-torch FP8 linear of tests/precision/
torch_fp8_linear.py (the LM head stays bfloat16). Both arms keep float32 master weights and
run the forward in bfloat16 (the masters cast each step, as accel.precision.compare.mixed_loss
does), with float32 logits and cross-entropy. From accel it takes only what makes the run the
same experiment: the tokenizer, the token windows, the initial weights (accel's init_params by
default, loaded by name; `--init hf` draws Hugging Face's own), the schedules' constants and
the gap metric (accel.precision.compare.RunResult.smoothed / relative_gap).

Protocols:
  train     `accel train` and accel.precision.compare.train_run (accel.train.loop.TrainConfig):
            betas (0.9, 0.95), warmup 20, cosine to 0.1 × lr over the run, global-norm clip 1.0
  constant  the loop accel's comparison used before it ran accel.train: AdamW(weight_decay 0.1,
            accel's default betas (0.9, 0.999), norms undecayed), 20-step linear warmup then
            constant lr, no clipping (the protocol of docs/fp8.md's first table)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fp8_torch_reference.py --protocol train \\
        --arms bf16 rowwise --steps 300 --out /tmp/fp8_ref_train.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

import accel
import accel.models
from accel.autodiff.optim import AdamW as AccelAdamW
from accel.cli.train import default_data
from accel.models.presets import preset
from accel.precision.compare import RunResult, relative_gap
from accel.train.data import TokenData
from accel.train.loop import TrainConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "precision"))
from torch_fp8_linear import RECIPES, replace_linears  # noqa: E402

ARMS = ("bf16",) + tuple(RECIPES)


def hf_model(config, init: str, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                     intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                     num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                     max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
                     rope_theta=config.rope_theta, initializer_range=config.initializer_range,
                     tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf).float()
    if init == "accel":
        from accel.models.llama import init_params

        params = init_params(config, seed, accel.get_backend("numpy"), accel.float32)
        own = dict(model.named_parameters())
        if set(own) != set(params):
            raise SystemExit(f"parameter names differ: {sorted(set(own) ^ set(params))}")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(torch.from_numpy(np.asarray(params[name].numpy())))
    return model


def optimizer(model, protocol: str, lr: float):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    keep = [p for p in model.parameters() if p.ndim < 2]  # norms: accel decays matrices only
    if protocol == "constant":
        ref = AccelAdamW(lr=lr, weight_decay=0.1)
        betas, eps, wd = (ref.beta1, ref.beta2), ref.eps, ref.weight_decay
    else:
        cfg = TrainConfig(lr=lr)
        betas, eps, wd = (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": keep, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps, foreach=False)


def run(arm: str, protocol: str, *, steps: int, lr: float, init: str, init_seed: int, data_seed: int,
        batch: int = 8, seq: int = 64) -> RunResult:
    tokenizer = accel.models.load_pretrained(accel.models.bundled_path(), backend="numpy").tokenizer
    config = preset("small", tokenizer.vocab_size)
    data = TokenData.from_text_file(default_data(), tokenizer)
    model = hf_model(config, init, init_seed)
    if arm != "bf16":
        replaced = replace_linears(model.model.layers, arm)
        assert len(replaced) == 7 * config.num_hidden_layers, replaced
    masters = dict(model.named_parameters())
    opt = optimizer(model, protocol, lr)
    train = TrainConfig(steps=steps, lr=lr)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        w = torch.from_numpy(data.windows("train", range(step * batch, (step + 1) * batch), seq, data_seed))
        low = {n: p.to(torch.bfloat16) for n, p in masters.items()}
        logits = functional_call(model, low, (w[:, :-1],), {"use_cache": False}).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if protocol == "constant":
            rate = lr * min(1.0, (step + 1) / 20)
        else:
            rate = train.lr_at(step)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"  {arm} {protocol} step {step + 1}: loss {loss.item():.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return RunResult(tuple(losses), time.perf_counter() - start)


def print_table(results: dict[str, RunResult], heading: str) -> None:
    print(f"\n{heading}")
    print(f"{'arm':<20} {'smoothed loss':>13} {'gap to bf16':>12} {'wall s':>8}")
    base = results.get("bf16")
    for arm, r in results.items():
        gap = f"{100 * relative_gap(r, base):.2f} %" if base is not None and arm != "bf16" else "—"
        print(f"{arm:<20} {r.smoothed()[-1]:>13.4f} {gap:>12} {r.seconds:>8.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("train", "constant"), default="train")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["bf16", "rowwise"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init", choices=("accel", "hf"), default="accel")
    parser.add_argument("--init-seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write every arm's losses here (JSON)")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="only print the table of runs written by --out (arms run in separate processes)")
    args = parser.parse_args(argv)
    if args.table:
        results, headings = {}, set()
        for path in args.table:
            with open(path) as f:
                saved = json.load(f)
            a = saved["args"]
            headings.add(f"small preset, protocol {a['protocol']}, lr {a['lr']}, {a['steps']} steps, "
                         f"init {a['init']} seed {a['init_seed']}, data seed {a['data_seed']}")
            for arm, losses in saved["losses"].items():
                results[arm] = RunResult(tuple(losses), saved["seconds"][arm])
        if len(headings) != 1:
            raise SystemExit(f"these runs are not one experiment: {sorted(headings)}")
        print_table(results, headings.pop())
        return 0
    torch.set_num_threads(args.threads)
    results = {}
    for arm in args.arms:
        results[arm] = run(arm, args.protocol, steps=args.steps, lr=args.lr, init=args.init,
                           init_seed=args.init_seed, data_seed=args.data_seed)
    print_table(results, f"small preset, torch {torch.__version__}, protocol {args.protocol}, lr {args.lr}, "
                         f"{args.steps} steps, init {args.init} seed {args.init_seed}, data seed {args.data_seed}, "
                         f"{args.threads} thread(s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "losses": {a: list(r.losses) for a, r in results.items()},
                       "seconds": {a: r.seconds for a, r in results.items()}}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
