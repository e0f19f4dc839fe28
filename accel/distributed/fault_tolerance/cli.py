"""`accel train --fault-tolerant`: the flags, the launcher side and the replica side.

    accel train --fault-tolerant --nproc-per-node 4 --model-config micro --steps 200 --out runs/ft

starts the lighthouse and 4 replica groups (one torchrun each, `--max-restarts`); every replica
runs this same command under torchrun and trains through accel/train/fault_tolerant.py. When the
job ends the launcher folds the replicas' event files into training.json and prints the summary.

Checkpoints: one replica writes the normal loop's checkpoint every --save-every committed steps
(accel/train/checkpoints.py). `--resume DIR` / `--auto-resume` start every replica from the newest
complete one (the launcher picks it once and passes its path to all replicas); a replica that
torchrun restarts later does not read it: it heals from a live peer.
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
from accel.distributed.fault_tolerance.events import LAUNCHER, EventLog, ft_dir
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
    from accel.train.checkpoints import complete_checkpoints, find_checkpoint, read_state

    if args.auto_resume and not args.resume and args.out and complete_checkpoints(args.out) \
            and not _is_replica():
        args.resume = args.out
    if args.resume and not _is_replica():
        args.resume = os.path.abspath(find_checkpoint(args.resume))
        args.out = args.out or os.path.dirname(args.resume)
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
    _refuse_fp8(getattr(args, "fp8", None), read_state(find_checkpoint(args.resume)) if args.resume else None)
    if _is_replica():
        return run_replica(args)
    from accel.distributed.fault_tolerance.launch import launch

    cfg = config_from_args(args, replicas=args.nproc_per_node or _DEFAULT.replicas)
    from_step = _check_before_launch(args, cfg)
    if args.resume:  # keep the earlier attempts' events: the record and the sample check span them
        _clear_markers(args.out)
    else:
        shutil.rmtree(ft_dir(args.out), ignore_errors=True)  # events of an earlier run in this --out
    os.makedirs(ft_dir(args.out), exist_ok=True)
    log = EventLog(args.out, LAUNCHER)
    log.emit("attempt", from_step=from_step, checkpoint=args.resume)
    log.close()
    argv = _replica_argv(sys.argv[1:]) + (["--resume", args.resume, "--out", args.out] if args.resume else [])
    code = launch(argv, cfg)
    if not os.path.isfile(os.path.join(args.out, "training.json")):
        print(f"accel: error: the fault-tolerant job ended (exit {code}) without a finished replica",
              file=sys.stderr)
        return code or 1
    record = write_record(args.out, cfg)
    print(summary_line(record))
    return code


def _refuse_fp8(policy: str | None, state: dict | None) -> None:
    """This loop runs no FP8: it would have to carry the delayed-scaling amax histories through
    heals, roll back what an aborted step recorded and all-reduce them over each quorum, so
    `--fp8` (or resuming a run trained with it) is refused rather than silently run in float32."""
    from accel.train.errors import TrainConfigError

    recorded = (state or {}).get("fp8")
    if policy or recorded:
        what = f"--fp8 {policy}" if policy else f"resuming a run trained with --fp8 {recorded['policy']}"
        raise TrainConfigError(f"{what} cannot be combined with --fault-tolerant: the fault-tolerant loop "
                               "runs no FP8 (its delayed-scaling amax histories are not carried through "
                               "heals and aborted steps)",
                               hint="train FP8 without --fault-tolerant (its ranks all-reduce the amax "
                                    "histories every step), or drop --fp8")


def _check_before_launch(args, cfg: FaultToleranceConfig) -> int:
    """What would make every replica fail at once (and torchrun restart each of them
    --ft-max-restarts times) is refused here, before anything starts. Returns the step the job
    starts from (the checkpoint's when resuming)."""
    import hashlib

    from accel.train.checkpoints import is_run_dir, read_state
    from accel.train.fault_tolerant import StepPlan

    record = os.path.join(args.out, "training.json")
    state = read_state(args.resume) if args.resume else None
    if state is None and is_run_dir(args.out):
        if not getattr(args, "overwrite", False):
            raise ModelError(f"{args.out} already holds a training run",
                             hint=f"continue it with --resume {args.out}, pass --overwrite or another --out")
        _clear_run(args.out)  # a replica restarted later must not load an older run's checkpoint
    cfg_train, data, global_batch = _train_config(args, cfg, state)
    if not os.path.isfile(data):
        raise ModelError(f"training data not found: {data}", hint="pass --data PATH to a UTF-8 text file")
    accel.get_backend(args.backend or (state or {}).get("backend_spec") or (state or {}).get("backend"))
    if state is not None:
        with open(data, encoding="utf-8") as f:
            digest = hashlib.sha256(f.read().encode("utf-8")).hexdigest()
        if digest != state["data"]["sha256"]:
            raise ModelError(f"{data} is not the text this run was trained on (sha256 differs)",
                             hint="resume with the same --data file, or start a new run")
        if int(state["data"]["position"]) != state["step"] * global_batch:
            raise ModelError(f"{args.resume} is at step {state['step']} with data cursor {state['data']['position']}, "
                             f"not step × the global batch {global_batch}",
                             hint="resume with the checkpoint's --global-batch-size")
        if state["step"] >= cfg_train.steps:
            raise ModelError(f"{args.resume} is already at step {state['step']}; --steps {cfg_train.steps} "
                             "leaves nothing to do", hint=f"pass --steps larger than {state['step']}")
    StepPlan(global_batch, cfg_train.batch_size, cfg.replicas, cfg.batch_policy)
    if os.path.exists(record):
        os.remove(record)
    return state["step"] if state else 0


def _clear_run(out: str) -> None:
    from accel.train.checkpoints import CHECKPOINT, LATEST

    for name in os.listdir(out):
        if CHECKPOINT.match(name) or name.startswith(".checkpoint-"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        elif name == LATEST:
            os.unlink(os.path.join(out, name))


def _clear_markers(out: str) -> None:
    """An earlier attempt's start/finish markers and final states (not its event files)."""
    folder = ft_dir(out)
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if not name.endswith(".jsonl"):
            os.unlink(os.path.join(folder, name))


def _train_config(args, cfg_ft: FaultToleranceConfig, state: dict | None):
    """(TrainConfig, data path, global batch) of this run: the flags over the checkpoint's
    (resuming) or over the defaults (a new run, saving every steps/10 as the normal loop does)."""
    from accel.cli import train as train_cli
    from accel.train.loop import TrainConfig

    given = train_cli._requested(args)
    if state is not None:
        cfg = dataclasses.replace(TrainConfig.from_dict(state["train_config"]), **given)
        data = args.data or state["data"]["path"]
    else:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        steps = given.get("steps", 100)
        base = {k: v for k, v in train_cli.DEFAULTS.items() if k in known and v is not None}
        cfg = TrainConfig(**{**base, "save_every": max(1, min(100, steps // 10)),
                             **{k: v for k, v in given.items() if k in known}})
        data = args.data or train_cli.default_data()
    global_batch = cfg.global_batch_size or cfg.batch_size * cfg.grad_accum * cfg_ft.replicas
    return dataclasses.replace(cfg, global_batch_size=global_batch), data, global_batch


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
    from accel.train.loop import master_dtype

    cfg_ft = config_from_args(args)
    replica = replica_id_from_env()
    folder = _checkpoint_to_load(args)
    state = None
    if folder is not None:
        from accel.io.tokenizer import Tokenizer
        from accel.models.config import LlamaConfig
        from accel.train.checkpoints import read_state

        state = read_state(folder)
        config = LlamaConfig.from_dict(state["model_config"], source=folder)
        tokenizer = Tokenizer.from_dir(folder)
        tokenizer_json = tokenizer.backend.to_str()
    else:
        args.data = args.data or train_cli.default_data()
        tokenizer, tokenizer_json = train_cli._tokenizer_for_new_run(args)
        config = train_cli._model_config(args.model_config, tokenizer)
    spec = args.backend or (state or {}).get("backend_spec") or (state or {}).get("backend")
    backend = accel.get_backend(spec)
    cfg, data_path, global_batch = _train_config(args, cfg_ft, state)
    data = TokenData.from_text_file(data_path, tokenizer)
    # a replica that torchrun restarted heals from a live peer without reading the checkpoint's
    # tensors (only its configs, so its parameters have the right shapes to receive)
    if folder is not None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        start = _start_from(folder, state, backend, cfg.seed)
        params = start[0].params
    else:
        start = None
        params = init_params(config, cfg.seed, backend, master_dtype(accel.as_dtype(cfg.dtype)))
    files = {"config.json": json.dumps(config.to_dict(), indent=1), "tokenizer.json": tokenizer_json,
             "tokenizer_config.json": train_cli._tokenizer_config(tokenizer)}
    resumed_from = {"checkpoint": folder, "step": state["step"]} if state else None
    # the runs this one continues (a normal-loop checkpoint's too), then this one
    segments = [*(state["history"].get("segments", []) if state else []),
                {"start_step": state["step"] if state else 0, "fault_tolerant": True, "replicas": cfg_ft.replicas,
                 "batch_policy": cfg_ft.batch_policy, "global_batch": global_batch}]

    def save(st, history) -> str:
        from accel.train.checkpoints import save_checkpoint

        return save_checkpoint(args.out, st.step, st.params, st.opt,
                               checkpoint_state(st, history, cfg, segments, config, data, backend, spec,
                                                resumed_from), files, keep=cfg.keep_checkpoints)

    result = train_fault_tolerant(causal_lm_loss(config), params, data, cfg, backend, cfg_ft, args.out,
                                  global_batch=global_batch, replica=replica, start=start, save=save,
                                  log_every=0 if args.no_progress else max(1, cfg.steps // 10))
    final_state = result.state
    if final_state.step < cfg.steps:
        return 0  # an orphan that found no peer: the job finished without it
    final = {**{f"params.{k}": v for k, v in final_state.params.items()},
             **{f"m.{k}": v for k, v in final_state.opt.m.items()},
             **{f"v.{k}": v for k, v in final_state.opt.v.items()}}
    safetensors.save_safetensors(os.path.join(ft_dir(args.out), f"final-{replica}.safetensors"), final,
                                 {"step": str(final_state.step), "adam_step": str(final_state.opt.step),
                                  "samples": str(final_state.samples)})
    train_cli._write_model_dir(args.out, final_state.params, files, args.save_dtype)
    write_record(args.out, cfg_ft, extra={
        **checkpoint_state(final_state, result.history, cfg, segments, config, data, backend, spec, resumed_from),
        "global_batch": global_batch, "checkpoints_written_here": result.checkpoints})
    return 0


def _checkpoint_to_load(args) -> str | None:
    """The checkpoint this run continues: the launcher's pick (--resume), or under a hand-started
    torchrun the newest in --out with --auto-resume."""
    from accel.train.checkpoints import complete_checkpoints, find_checkpoint

    newest = complete_checkpoints(args.out)
    if args.resume:
        return os.path.abspath(find_checkpoint(args.resume))
    return os.path.join(args.out, newest[-1]) if newest and args.auto_resume else None


def _start_from(folder: str, state: dict, backend, seed: int):
    """(ReplicaState, History) of a checkpoint, written in fault-tolerant mode or by the normal loop."""
    from accel.distributed.fault_tolerance.state import ReplicaState
    from accel.train.checkpoints import load_checkpoint
    from accel.train.fault_tolerant import History

    params, opt, _ = load_checkpoint(folder, backend)
    step = int(state["step"])
    history = state["history"]
    # a normal-loop checkpoint has no participant counts: its steps ran on world_size ranks
    participants = history.get("participants") or [int(state.get("world_size", 1))] * step
    return (ReplicaState(params, opt, step, int(state["data"]["position"]), seed),
            History([float(x) for x in history["losses"][:step]], [int(x) for x in participants[:step]]))


def checkpoint_state(st, history, cfg, segments: list[dict], config, data, backend, spec,
                     resumed_from) -> dict:
    """trainer_state.json in the normal loop's format (accel/cli/train.py), so either loop resumes
    the other's checkpoint; the fault-tolerant extras are the participants per step."""
    participants = history.participants[-1] if history.participants else segments[-1]["replicas"]
    return {"format": "accel-train-2", "step": st.step, "seed": cfg.seed, "backend": backend.spec,
            "backend_spec": spec or backend.spec, "backends": [backend.spec] * participants,
            "world_size": participants, "consumed_samples": st.samples,
            "rng": {"kind": "philox", "key": "blake2b(seed, split, sample id)", "next_sample": st.samples},
            "data": {"path": data.source, "sha256": data.sha256, "train_tokens": int(len(data.train)),
                     "val_tokens": int(len(data.val)), "position": st.samples, "unit": "samples"},
            "model_config": config.to_dict(), "train_config": dataclasses.asdict(cfg),
            "history": {"losses": history.losses, "participants": history.participants, "evals": [],
                        "segments": [*segments[:-1], {**segments[-1], "end_step": st.step}],
                        "spikes": [], "spike_state": {}},
            "resumed_from": resumed_from}


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
    # the replica's history (carried through heals and checkpoints) when it wrote one, else the events'
    history = base.get("history") or {"losses": record["losses"], "participants": record["participants"]}
    base.update({"format": "accel-train-ft-1", "history": history,
                 "fault_tolerance": {"config": dataclasses.asdict(cfg), "batch_policy": cfg.batch_policy,
                                     **{k: v for k, v in record.items() if k not in ("losses", "participants")}}})
    _atomic_write_text(path, json.dumps(base, indent=1))
    return record
