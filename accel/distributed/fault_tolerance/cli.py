"""`accel train --fault-tolerant`: the flags, the launcher side and the replica side.

    accel train --fault-tolerant --nproc-per-node 4 --model-config micro --steps 200 --out runs/ft

starts the lighthouse and 4 replica groups (one torchrun each, `--max-restarts`); every replica
runs this same command under torchrun and trains through accel/train/fault_tolerant.py. When the
job ends the launcher folds the replicas' event files into training.json and prints the summary.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import accel
from accel.core.errors import ModelError
from accel.distributed.fault_tolerance.config import BATCH_POLICIES, FaultToleranceConfig
from accel.distributed.fault_tolerance.events import ft_dir
from accel.distributed.fault_tolerance.report import fold, summary_line

_DEFAULT = FaultToleranceConfig()


def add_arguments(p) -> None:
    g = p.add_argument_group("fault tolerance (torchft; docs/fault-tolerance.md)")
    g.add_argument("--fault-tolerant", action="store_true",
                   help="each of --nproc-per-node replicas trains data-parallel; a failed replica is "
                        "dropped, restarted by torchrun and healed from a live peer")
    g.add_argument("--ft-min-replicas", type=int, default=None, help=f"(default: {_DEFAULT.min_replicas})")
    g.add_argument("--ft-batch-policy", choices=BATCH_POLICIES, default=None,
                   help="constant: the global batch stays when replicas drop out; shrink: it scales "
                        "with the quorum (default: constant)")
    g.add_argument("--ft-timeout", type=float, default=None,
                   help=f"seconds before a collective with a hung peer fails the step (default: {_DEFAULT.timeout_s})")
    g.add_argument("--ft-heartbeat-timeout", type=float, default=None,
                   help=f"seconds of silence before the lighthouse drops a replica (default: {_DEFAULT.heartbeat_timeout_s})")
    g.add_argument("--ft-max-restarts", type=int, default=None,
                   help=f"torchrun restarts per replica (default: {_DEFAULT.max_restarts})")
    g.add_argument("--ft-lighthouse", default=None,
                   help="http://HOST:PORT of a running lighthouse (many machines); default: start one here")
    g.add_argument("--ft-spare-device", default=None,
                   help="backend spec this rank moves to after a DeviceError, e.g. npusim:ascend910b:1")


def config_from_args(args, replicas: int | None = None) -> FaultToleranceConfig:
    return FaultToleranceConfig.from_env(
        replicas=replicas, min_replicas=args.ft_min_replicas, batch_policy=args.ft_batch_policy,
        timeout_s=args.ft_timeout, heartbeat_timeout_s=args.ft_heartbeat_timeout,
        max_restarts=args.ft_max_restarts, lighthouse=args.ft_lighthouse, spare_device=args.ft_spare_device)


def _is_replica() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "ACCEL_FT_REPLICA" in os.environ


def run(args) -> int:
    if args.resume:
        raise ModelError("--fault-tolerant does not resume from a checkpoint yet",
                         hint="start a new run (a failed replica heals from its peers, not from disk)")
    if args.out is None:
        raise ModelError("accel train --fault-tolerant needs --out DIR", hint="pass --out runs/NAME")
    unsupported = [flag for flag, value in (("--zero", getattr(args, "zero", None)),
                                            ("--nnodes", getattr(args, "nnodes", None)),
                                            ("--rdzv-endpoint", getattr(args, "rdzv_endpoint", None)))
                   if value]
    if unsupported:
        raise ModelError(f"{', '.join(unsupported)} cannot be combined with --fault-tolerant",
                         hint="replicas hold the whole optimizer state and start one torchrun each; on "
                              "many machines run a lighthouse (docs/fault-tolerance.md)")
    if _is_replica():
        return run_replica(args)
    from accel.distributed.fault_tolerance.launch import launch

    cfg = config_from_args(args, replicas=args.nproc_per_node or _DEFAULT.replicas)
    _check_before_launch(args, cfg)
    shutil.rmtree(ft_dir(args.out), ignore_errors=True)  # events of an earlier run in this --out
    os.makedirs(ft_dir(args.out), exist_ok=True)
    code = launch(_replica_argv(sys.argv[1:]), cfg)
    if not os.path.isfile(os.path.join(args.out, "training.json")):
        print(f"accel: error: the fault-tolerant job ended (exit {code}) without a finished replica",
              file=sys.stderr)
        return code or 1
    record = write_record(args.out, cfg)
    print(summary_line(record))
    return code


def _check_before_launch(args, cfg: FaultToleranceConfig) -> None:
    """What would make every replica fail at once (and torchrun restart each of them
    --ft-max-restarts times) is refused here, before anything starts."""
    from accel.cli import train as train_cli
    from accel.train.fault_tolerant import StepPlan

    record = os.path.join(args.out, "training.json")
    if os.path.exists(record) and not getattr(args, "overwrite", False):
        raise ModelError(f"{args.out} already holds a training run", hint="pass --overwrite or another --out")
    data = args.data or train_cli.default_data()
    if not os.path.isfile(data):
        raise ModelError(f"training data not found: {data}", hint="pass --data PATH to a UTF-8 text file")
    accel.get_backend(args.backend)
    micro = args.batch_size or train_cli.DEFAULTS["batch_size"]
    batch = getattr(args, "global_batch_size", None) or micro * (args.grad_accum or 1) * cfg.replicas
    StepPlan(batch, micro, cfg.replicas, cfg.batch_policy)
    if os.path.exists(record):
        os.remove(record)


def _replica_argv(argv: list[str]) -> list[str]:
    """The launcher's own command line without --nproc-per-node (each replica is one process)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            out.append(a)
    return out


def run_replica(args) -> int:
    from accel.cli import train as train_cli
    from accel.distributed.fault_tolerance.manager import replica_id_from_env
    from accel.io import safetensors
    from accel.models.llama import causal_lm_loss, init_params
    from accel.train.data import TokenData
    from accel.train.fault_tolerant import train_fault_tolerant
    from accel.train.loop import TrainConfig, master_dtype

    backend = accel.get_backend(args.backend)
    cfg_ft = config_from_args(args)
    replica = replica_id_from_env()
    args.data = args.data or train_cli.default_data()
    tokenizer, tokenizer_json = train_cli._tokenizer_for_new_run(args)
    config = train_cli._model_config(args.model_config, tokenizer)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: getattr(args, k) for k in train_cli.DEFAULTS if k in known and getattr(args, k, None) is not None}
    if args.steps is not None:
        overrides["steps"] = args.steps
    cfg = TrainConfig(**{**{k: v for k, v in train_cli.DEFAULTS.items() if k in known and v is not None},
                         **overrides})
    global_batch = getattr(args, "global_batch_size", None) or cfg.batch_size * cfg.grad_accum * cfg_ft.replicas
    params = init_params(config, cfg.seed, backend, master_dtype(accel.as_dtype(cfg.dtype)))
    data = TokenData.from_text_file(args.data, tokenizer)
    result = train_fault_tolerant(causal_lm_loss(config), params, data, cfg, backend, cfg_ft, args.out,
                                  global_batch=global_batch, replica=replica,
                                  log_every=0 if args.no_progress else max(1, cfg.steps // 10))
    state = result.state
    if state.step < cfg.steps:
        return 0  # an orphan that found no peer: the job finished without it
    final = {**{f"params.{k}": v for k, v in state.params.items()},
             **{f"m.{k}": v for k, v in state.opt.m.items()}, **{f"v.{k}": v for k, v in state.opt.v.items()}}
    safetensors.save_safetensors(os.path.join(ft_dir(args.out), f"final-{replica}.safetensors"), final,
                                 {"step": str(state.step), "adam_step": str(state.opt.step),
                                  "samples": str(state.samples)})
    files = {"config.json": json.dumps(config.to_dict(), indent=1), "tokenizer.json": tokenizer_json,
             "tokenizer_config.json": train_cli._tokenizer_config(tokenizer)}
    train_cli._write_model_dir(args.out, state.params, files, args.save_dtype)
    write_record(args.out, cfg_ft, extra={
        "step": state.step, "seed": cfg.seed, "backend": backend.spec, "model_config": config.to_dict(),
        "train_config": dataclasses.asdict(cfg), "global_batch": global_batch,
        "data": {"path": data.source, "sha256": data.sha256, "position_samples": state.samples}})
    return 0


def write_record(out: str, cfg: FaultToleranceConfig, extra: dict | None = None) -> dict:
    """training.json with the fault-tolerance record folded from every replica's events."""
    from accel.train.checkpoints import _atomic_write_text

    path = os.path.join(out, "training.json")
    base = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            base = json.load(f)
    record = fold(out)
    base.update(extra or {})
    base.update({"format": "accel-train-ft-1",
                 "history": {"losses": record["losses"], "participants": record["participants"]},
                 "fault_tolerance": {"config": dataclasses.asdict(cfg), "batch_policy": cfg.batch_policy,
                                     **{k: v for k, v in record.items() if k not in ("losses", "participants")}}})
    _atomic_write_text(path, json.dumps(base, indent=1))
    return record
