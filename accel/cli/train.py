"""`accel train`: train a Llama-family model on a text file, on any backend, and resume anywhere.

    accel train --model-config tiny --data corpus.txt --backend numpy --steps 200 --out runs/a
    accel train --resume runs/a --backend torch:cpu --steps 400

This module is the glue between the model (`accel.models`) and the model-agnostic loop in
`accel.train`. The output directory is a Hugging Face-style model directory (config.json,
model.safetensors, tokenizer.json) plus checkpoint-NNNNNN/ directories and training.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys

import accel
from accel import ops
from accel.core.errors import ModelError

DEFAULTS = dict(batch_size=8, seq_len=64, lr=3e-3, warmup=20, eval_every=50, save_every=0,
                seed=0, dtype="float32", grad_accum=1, schedule_steps=0, weight_decay=0.1, grad_clip=1.0)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a Llama-family model on a text file (any backend)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model-config", default=None,
                   help="preset name (micro, tiny, small) or a config.json path (default: tiny)")
    p.add_argument("--data", help="UTF-8 text file to train on (default: the corpus shipped with accel)")
    p.add_argument("--backend", default=None, help="backend to train on, e.g. numpy, torch:cpu")
    p.add_argument("--steps", type=int, default=None, help="train until this many steps are done")
    p.add_argument("--out", default=None, help="output directory (default: the --resume directory)")
    p.add_argument("--resume", default=None, help="continue from this run directory or checkpoint")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json or model directory (default: the bundled model's)")
    p.add_argument("--train-tokenizer", type=int, default=0, metavar="VOCAB",
                   help="train a byte-level BPE tokenizer of this vocabulary size on --data instead")
    for name, value in DEFAULTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                       help=f"(default: {value})")
    p.add_argument("--save-dtype", default="float32", help="dtype of the final model.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    out, result = train_from_args(args)
    evals = ", ".join(f"step {s}: {v:.4f}" for s, v in result.evals[-3:])
    print(f"trained to step {len(result.losses)} in {result.seconds:.1f}s "
          f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s); "
          f"last loss {result.losses[-1]:.4f}; eval {evals}")
    print(f"model: {out}   checkpoint: {result.checkpoint}")
    return 0


# --- the pieces ---------------------------------------------------------------------------
def default_data() -> str:
    from accel import models

    return os.path.join(os.path.dirname(models.__file__), "data", "stories.txt")


def _tokenizer_for_new_run(args):
    from accel.io.tokenizer import Tokenizer, train_byte_level_bpe

    if args.train_tokenizer:
        with open(args.data, encoding="utf-8") as f:
            text = f.read()
        # train on paragraphs so merges never cross a story boundary
        backend = train_byte_level_bpe([p for p in text.split("\n\n") if p.strip()], args.train_tokenizer)
        return Tokenizer(backend, bos_id=backend.token_to_id("<s>"),
                         eos_ids=[backend.token_to_id("</s>")]), backend.to_str()
    path = args.tokenizer
    if path is None:
        from accel import models

        path = models.bundled_path()
    tokenizer = Tokenizer.from_file(path)
    return tokenizer, tokenizer.backend.to_str()


def _model_config(name: str | None, tokenizer):
    from accel.models.config import LlamaConfig
    from accel.models.presets import preset, with_vocab

    name = name or "tiny"
    if name.endswith(".json") or os.path.isdir(name):
        config = LlamaConfig.from_file(name)
        if config.vocab_size < tokenizer.vocab_size:
            config = with_vocab(config, tokenizer.vocab_size)
        return config
    eos = tokenizer.eos_ids[0] if tokenizer.eos_ids else None
    return preset(name, tokenizer.vocab_size, tokenizer.bos_id, eos)


def _tokenizer_config(tokenizer) -> str:
    vocab = tokenizer.backend
    name = lambda i: None if i is None else vocab.id_to_token(i)
    return json.dumps({"bos_token": name(tokenizer.bos_id),
                       "eos_token": name(tokenizer.eos_ids[0]) if tokenizer.eos_ids else None,
                       "add_bos_token": False, "model_max_length": 4096}, indent=1)


def train_from_args(args):
    from accel.models.config import LlamaConfig
    from accel.models.llama import init_params
    from accel.io.tokenizer import Tokenizer
    from accel.train import TrainConfig, TrainResult, TokenData, load_checkpoint, save_checkpoint, train
    from accel.train.checkpoints import find_checkpoint
    from accel.train.loop import master_dtype

    backend = accel.get_backend(args.backend)
    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.resume:
        folder = find_checkpoint(args.resume)
        params, opt_state, state = load_checkpoint(folder, backend)
        config = LlamaConfig.from_dict(state["model_config"], source=folder)
        tokenizer = Tokenizer.from_dir(folder)
        tokenizer_json = tokenizer.backend.to_str()
        cfg = dataclasses.replace(TrainConfig.from_dict(state["train_config"]), **overrides)
        data_path = args.data or state["data"]["path"]
        out = args.out or os.path.dirname(os.path.abspath(folder))
        start = int(state["step"])
        result = TrainResult(losses=list(state["history"]["losses"]),
                             evals=[tuple(e) for e in state["history"]["evals"]])
        resumed_from = {"checkpoint": os.path.abspath(folder), "step": start, "backend": state.get("backend")}
    else:
        if args.out is None:
            raise ModelError("accel train needs --out DIR (or --resume DIR)", hint="pass --out runs/NAME")
        args.data = args.data or default_data()
        tokenizer, tokenizer_json = _tokenizer_for_new_run(args)
        config = _model_config(args.model_config, tokenizer)
        cfg = TrainConfig(**{**DEFAULTS, **overrides})
        data_path, out, start, result, opt_state = args.data, args.out, 0, None, None
        params = init_params(config, cfg.seed, backend, master_dtype(accel.as_dtype(cfg.dtype)))
        resumed_from = None

    data = TokenData.from_text_file(data_path, tokenizer)
    if args.resume and data.sha256 != state["data"]["sha256"]:
        raise ModelError(f"{data_path} is not the text this run was trained on (sha256 differs)",
                         hint="resume with the same --data file, or start a new run")
    if config.vocab_size < tokenizer.vocab_size:
        raise ModelError(f"the model's vocabulary ({config.vocab_size}) is smaller than the tokenizer's "
                         f"({tokenizer.vocab_size})", hint="use a matching config and tokenizer")
    files = {"config.json": json.dumps(config.to_dict(), indent=1), "tokenizer.json": tokenizer_json,
             "tokenizer_config.json": _tokenizer_config(tokenizer)}
    command = "accel " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and \
        os.path.basename(sys.argv[0]) == "accel" else None

    def state_of(step: int, res) -> dict:
        return {"format": "accel-train-1", "step": step, "seed": cfg.seed, "backend": backend.spec,
                "rng": {"kind": "philox", "key": "blake2b(seed, split, step, micro)", "next_step": step},
                "data": {"path": data.source, "sha256": data.sha256, "train_tokens": int(len(data.train)),
                         "val_tokens": int(len(data.val)), "position": step},
                "model_config": config.to_dict(), "train_config": dataclasses.asdict(cfg),
                "history": {"losses": res.losses, "evals": res.evals}, "resumed_from": resumed_from,
                "command": command}

    def save(step, p, o, res):
        return save_checkpoint(out, step, p, o, state_of(step, res), files)

    from accel.models.llama import causal_lm_loss

    params, opt_state, result = train(causal_lm_loss(config), params, data, cfg, backend,
                                      opt_state=opt_state, start_step=start, result=result, save=save,
                                      progress=not args.no_progress)
    _write_model_dir(out, params, files, args.save_dtype)
    summary = {**state_of(cfg.steps, result), "seconds": result.seconds, "tokens": result.tokens,
               "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
               "parameters": config.num_parameters()}
    from accel.train.checkpoints import _atomic_write_text

    _atomic_write_text(os.path.join(out, "training.json"), json.dumps(summary, indent=1))
    return out, result


def _write_model_dir(out: str, params: dict, files: dict, save_dtype: str) -> None:
    from accel.io import safetensors as checkpoint
    from accel.train.checkpoints import _atomic_write_text

    dtype = accel.as_dtype(save_dtype)
    weights = {k: (v if v.dtype is dtype else ops.cast(v, dtype)) for k, v in params.items()}
    checkpoint.save_safetensors(os.path.join(out, "model.safetensors"), weights, {"format": "pt"})
    for name, text in files.items():
        _atomic_write_text(os.path.join(out, name), text)
