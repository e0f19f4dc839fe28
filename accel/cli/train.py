"""`accel train`: train a Llama-family model on a text file, on any backend and any number of
ranks, and resume anywhere.

    accel train --model-config tiny --data corpus.txt --backend numpy --steps 200 --out runs/a
    accel train --resume runs/a --backend torch:cpu --steps 400
    accel train --nproc-per-node 4 --global-batch-size 16 --backend numpy ... --out runs/b
    torchrun --standalone --nproc-per-node 4 -m accel train --global-batch-size 16 ... --out runs/b

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
from accel.train.errors import TrainConfigError

# flags that go into TrainConfig; None: the value is derived (batch plan, save cadence)
DEFAULTS = dict(batch_size=8, seq_len=64, lr=3e-3, warmup=20, eval_every=50, save_every=None,
                seed=0, dtype="float32", grad_accum=1, schedule_steps=0, weight_decay=0.1, grad_clip=1.0,
                global_batch_size=0, max_micro_batch=0, zero=0, bucket_mb=25.0, reduction_shards=0,
                spike_factor=3.0, on_spike="warn", keep_checkpoints=3)
TYPES = {"save_every": int}
HELP = {"batch_size": "micro-batch per rank", "global_batch_size": "sequences per optimizer step over all "
        "ranks and micro-batches (default: batch-size × grad-accum × ranks)",
        "max_micro_batch": "largest micro-batch when it is derived from --global-batch-size (default: 8)",
        "save_every": "checkpoint every N steps (default: steps/10, at most 100)",
        "zero": "1: ZeRO stage 1, AdamW state sharded over the ranks", "bucket_mb": "all-reduce bucket (MiB)",
        "reduction_shards": "fixed virtual micro-shards of --deterministic-reduction (default: the global batch)",
        "spike_factor": "a loss above this × its running average is a spike (0: off)",
        "on_spike": "warn, skip (the step) or stop", "keep_checkpoints": "newest N checkpoints kept"}


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
        p.add_argument("--" + name.replace("_", "-"), type=TYPES.get(name, type(value)), default=None,
                       help=f"{HELP.get(name, '')} (default: {value})".strip())
    p.add_argument("--deterministic-reduction", action="store_true", default=None,
                   help="reduce gradients over fixed shards in a fixed order: bitwise the same weights "
                        "on any world size that divides the shards")
    p.add_argument("--save-dtype", default="float32", help="dtype of the final model.safetensors")
    p.add_argument("--fp8", default=None, metavar="POLICY",
                   help="run the linears an `accel fp8-plan` policy names in FP8 (forward and backward GEMMs)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out if there is one, else "
                        "start (for restarts by torchrun's elastic agent)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    launch = p.add_argument_group("launch on several processes (torchrun)")
    launch.add_argument("--nproc-per-node", type=int, default=None,
                        help="start this many ranks here with torchrun (one per device)")
    launch.add_argument("--nnodes", default=None, help="machines: N, or MIN:MAX for elastic rendezvous")
    launch.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of the rendezvous (multi-node)")
    from accel.distributed.fault_tolerance import cli as fault_tolerance

    fault_tolerance.add_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.fault_tolerant:
        from accel.distributed.fault_tolerance import cli as fault_tolerance

        return fault_tolerance.run(args)
    if args.nproc_per_node is not None or args.nnodes is not None:
        return _launch(args)
    out, result = train_from_args(args)
    from accel.train.comm import launched_by_torchrun

    if launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return 0
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


def _launch(args) -> int:
    """`accel train --nproc-per-node N ...`: torchrun (torch.distributed.run) starts the ranks."""
    from accel.distributed.launch import run_torchrun

    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise TrainConfigError(f"--nproc-per-node {args.nproc_per_node} is invalid",
                               hint="pass --nproc-per-node 1 or more")
    argv = ["train"]
    for name, value in sorted(vars(args).items()):
        if name in ("run", "command", "nproc_per_node", "nnodes", "rdzv_endpoint") or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return int(run_torchrun(argv, nproc_per_node=args.nproc_per_node or 1, nnodes=args.nnodes or "1",
                            rdzv_endpoint=args.rdzv_endpoint) or 0)


def _backend_for_rank(spec: str | None):
    """`--backend a,b,c`: one backend per local rank (mixed fleets); ACCEL_BACKEND per process."""
    if spec and "," in spec:
        from accel.distributed import backend_for_local_rank
        from accel.train.comm import launch_local_rank

        spec = backend_for_local_rank(spec, launch_local_rank())
    return accel.get_backend(spec)


def _resume_command(out: str, comm) -> str:
    if comm.world_size == 1:
        return f"accel train --resume {shlex.quote(out)}"
    return f"accel train --nproc-per-node {comm.world_size} --resume {shlex.quote(out)}"


def _not_a_file(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainConfigError(f"--out {out} is a file, not a directory",
                               hint="pass --out a new or existing directory")


def _check_out(out: str, overwrite: bool, comm) -> None:
    from accel.train.checkpoints import CHECKPOINT, LATEST, is_run_dir

    _not_a_file(out)
    if is_run_dir(out) and not overwrite:
        raise TrainConfigError(f"--out {out} already holds a training run",
                               hint=f"continue it with --resume {out}, choose another --out, or pass "
                                    "--overwrite to replace it")
    comm.barrier()          # every rank has looked before rank 0 clears anything
    if overwrite and comm.is_main and os.path.isdir(out):
        import shutil

        for name in os.listdir(out):
            if CHECKPOINT.match(name) or name.startswith(".checkpoint-"):
                shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            elif name in (LATEST, "training.json"):
                os.unlink(os.path.join(out, name))
    comm.barrier()


def _requested(args) -> dict:
    """The TrainConfig fields the user gave on the command line."""
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    if args.steps is not None:
        given["steps"] = args.steps
    if args.deterministic_reduction:
        given["deterministic_reduction"] = True
    return given


def _plan(cfg, given: dict, world_size: int, resumed: bool):
    """The batch plan for this many ranks: G kept, micro-batch and accumulation derived."""
    from accel.train.batching import plan_batches

    G = cfg.global_batch_size or cfg.batch_size * cfg.grad_accum * world_size
    explicit_split = "global_batch_size" in given or resumed
    micro = given.get("batch_size") if explicit_split else cfg.batch_size
    accum = given.get("grad_accum") if explicit_split else cfg.grad_accum
    cap = cfg.max_micro_batch or (cfg.batch_size if resumed else DEFAULTS["batch_size"])
    shards = (cfg.reduction_shards or G) if cfg.deterministic_reduction else 0
    plan = plan_batches(G, world_size, micro_batch=micro, grad_accum=accum, max_micro_batch=cap, shards=shards)
    cfg = dataclasses.replace(cfg, batch_size=plan.micro_batch, grad_accum=plan.grad_accum, global_batch_size=G,
                              reduction_shards=shards)
    return plan, cfg


def train_from_args(args):
    from accel.models.config import LlamaConfig
    from accel.models.llama import init_params
    from accel.io.tokenizer import Tokenizer
    from accel.train import TrainConfig, TrainResult, TokenData, load_checkpoint, save_checkpoint, train
    from accel.train.checkpoints import _atomic_write_text, clean_partial, find_checkpoint, read_state
    from accel.train.comm import connect
    from accel.train.loop import master_dtype

    given = _requested(args)
    if args.auto_resume and not args.resume and args.out:
        from accel.train.checkpoints import complete_checkpoints

        if complete_checkpoints(args.out):
            args.resume = args.out
    main_rank = int(os.environ.get("RANK", "0")) == 0
    say = (lambda line: print(line, file=sys.stderr)) if main_rank else (lambda line: None)
    if args.resume:
        folder = find_checkpoint(args.resume)
        state = read_state(folder)
        spec = args.backend or state.get("backend_spec") or state.get("backend")
        if args.backend is None and spec:
            say(f"accel: resuming on the checkpoint's backend {spec} (pass --backend to change it)")
        backend = _backend_for_rank(spec)
        comm = connect(backend)
        params, opt_state, _ = load_checkpoint(folder, backend)
        config = LlamaConfig.from_dict(state["model_config"], source=folder)
        tokenizer = Tokenizer.from_dir(folder)
        tokenizer_json = tokenizer.backend.to_str()
        stored = TrainConfig.from_dict(state["train_config"])
        for name, value in given.items():
            if name != "steps" and getattr(stored, name, value) != value:
                say(f"accel: --{name.replace('_', '-')} {value} overrides the checkpoint's {getattr(stored, name)}")
        cfg = dataclasses.replace(stored, **given)
        data_path = args.data or state["data"]["path"]
        out = args.out or os.path.dirname(os.path.abspath(folder))
        _not_a_file(out)
        start = int(state["step"])
        if start >= cfg.steps:
            raise TrainConfigError(f"{folder} is already at step {start}; --steps {cfg.steps} leaves nothing to do",
                                   hint=f"pass --steps larger than {start}")
        history = state["history"]
        result = TrainResult(losses=list(history["losses"]), evals=[tuple(e) for e in history["evals"]],
                             segments=list(history.get("segments", [])), spikes=list(history.get("spikes", [])),
                             spike_state=dict(history.get("spike_state", {})))
        resumed_from = {"checkpoint": os.path.abspath(folder), "step": start, "backend": state.get("backend"),
                        "world_size": state.get("world_size", 1)}
        if comm.is_main:
            for name in clean_partial(out):
                say(f"accel: removed {name}, left behind by a save that was interrupted")
    else:
        if args.out is None:
            raise TrainConfigError("accel train needs --out DIR (or --resume DIR)", hint="pass --out runs/NAME")
        spec = args.backend
        backend = _backend_for_rank(spec)
        comm = connect(backend)
        _check_out(args.out, args.overwrite, comm)
        args.data = args.data or default_data()
        tokenizer, tokenizer_json = _tokenizer_for_new_run(args)
        config = _model_config(args.model_config, tokenizer)
        steps = given.get("steps", 100)
        auto = {"save_every": max(1, min(100, steps // 10))}
        cfg = TrainConfig(**{**DEFAULTS, **auto, **given})
        data_path, out, start, result, opt_state = args.data, args.out, 0, TrainResult(), None
        params = init_params(config, cfg.seed, backend, master_dtype(accel.as_dtype(cfg.dtype)))
        resumed_from = None

    plan, cfg = _plan(cfg, given, comm.world_size, bool(args.resume))
    data = TokenData.from_text_file(data_path, tokenizer)
    if args.resume and data.sha256 != state["data"]["sha256"]:
        raise ModelError(f"{data_path} is not the text this run was trained on (sha256 differs)",
                         hint="resume with the same --data file, or start a new run")
    if config.vocab_size < tokenizer.vocab_size:
        raise ModelError(f"the model's vocabulary ({config.vocab_size}) is smaller than the tokenizer's "
                         f"({tokenizer.vocab_size})", hint="use a matching config and tokenizer")
    comm.check_agreement("model config", json.dumps(config.to_dict(), sort_keys=True))
    comm.check_agreement("data file", data.sha256)
    comm.check_agreement("dtype", cfg.dtype)
    comm.check_agreement("training config", json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    comm.check_agreement("start step", start)
    backends = comm.fleet(backend.spec)
    result.segments.append({"start_step": start, "end_step": cfg.steps, "world_size": comm.world_size,
                            "backends": backends, **plan.describe(), "zero": cfg.zero,
                            "deterministic_reduction": cfg.deterministic_reduction})
    say(f"accel: {comm.world_size} rank(s) on {', '.join(sorted(set(backends)))}: global batch "
        f"{plan.global_batch} = micro-batch {plan.micro_batch} × accumulation {plan.grad_accum} × "
        f"{comm.world_size} ranks" + (f", {plan.shards} fixed reduction shards" if plan.shards else ""))
    files = {"config.json": json.dumps(config.to_dict(), indent=1), "tokenizer.json": tokenizer_json,
             "tokenizer_config.json": _tokenizer_config(tokenizer)}
    command = "accel " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and \
        os.path.basename(sys.argv[0]) == "accel" else None

    fp8, fp8_record = None, None
    if getattr(args, "fp8", None) or (args.resume and state.get("fp8")):  # docs/fp8.md
        from accel import precision
        from accel.train.checkpoints import load_extra_state

        fp8, fp8_record = precision.resume_plan(getattr(args, "fp8", None), config, backend,
                                                state.get("fp8") if args.resume else None,
                                                load_extra_state(folder, backend) if args.resume else None,
                                                warn=lambda line: say(f"accel: warning: {line}"))
        if args.resume and fp8 is not None:
            precision.rescale_gradient_amax(fp8, state, plan.micro_batch * cfg.seq_len, say)
    after_step = None
    if comm.world_size > 1:
        from accel.precision import data_parallel_hook

        after_step = data_parallel_hook(fp8, fp8_record, comm, backend, cfg.deterministic_reduction, say)

    def state_of(step: int, res) -> dict:
        consumed = step * plan.global_batch
        return {"format": "accel-train-2", "step": step, "seed": cfg.seed, "backend": backend.spec,
                "backend_spec": spec or backend.spec, "backends": backends, "world_size": comm.world_size,
                "consumed_samples": consumed,
                "rng": {"kind": "philox", "key": "blake2b(seed, split, sample id)", "next_sample": consumed},
                "data": {"path": data.source, "sha256": data.sha256, "train_tokens": int(len(data.train)),
                         "val_tokens": int(len(data.val)), "position": consumed, "unit": "samples"},
                "model_config": config.to_dict(), "train_config": dataclasses.asdict(cfg),
                "history": {"losses": res.losses, "evals": res.evals, "segments": res.segments,
                            "spikes": res.spikes, "spike_state": res.spike_state},
                "resumed_from": resumed_from, "command": command, "fp8": fp8_record}

    def save(step, p, o, res):  # the FP8 amax histories are training state: they go in too
        extra = fp8.state.checkpoint() if fp8 is not None and fp8.state.layers else None
        return save_checkpoint(out, step, p, o, state_of(step, res), files, keep=cfg.keep_checkpoints, extra=extra)

    from accel.models.llama import causal_lm_loss

    loss_fn = causal_lm_loss(config)
    if fp8 is not None:
        loss_fn = fp8.wrap(loss_fn)
    params, opt_state, result = train(loss_fn, params, data, cfg, backend,
                                      opt_state=opt_state, start_step=start, result=result, save=save,
                                      progress=not args.no_progress, comm=comm, plan=plan,
                                      resume_hint=_resume_command(out, comm), log=say, after_step=after_step)
    if comm.is_main:
        _write_model_dir(out, params, files, args.save_dtype)
        summary = {**state_of(cfg.steps, result), "seconds": result.seconds, "tokens": result.tokens,
                   "tokens_per_s": result.tokens / max(result.step_seconds, 1e-9),
                   "step_seconds": result.step_seconds, "step_cpu_seconds": result.step_cpu_seconds,
                   "parameters": config.num_parameters(), "optimizer_bytes_per_rank": result.optimizer_bytes,
                   "comm_seconds": result.comm_seconds}
        _atomic_write_text(os.path.join(out, "training.json"), json.dumps(summary, indent=1))
    comm.barrier()
    return out, result


def _write_model_dir(out: str, params: dict, files: dict, save_dtype: str) -> None:
    from accel.io import safetensors as checkpoint
    from accel.train.checkpoints import _atomic_write_text

    dtype = accel.as_dtype(save_dtype)
    weights = {k: (v if v.dtype is dtype else ops.cast(v, dtype)) for k, v in params.items()}
    checkpoint.save_safetensors(os.path.join(out, "model.safetensors"), weights, {"format": "pt"})
    for name, text in files.items():
        _atomic_write_text(os.path.join(out, name), text)
