"""Starting a job: torchrun (torch.distributed.run) launches the ranks, never accel itself; and
which accel backend each local rank runs on (mixed fleets).

`accel train --nproc-per-node N ...` calls `run_torchrun`, which is exactly
`torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m accel train ...`.
"""
from __future__ import annotations

from accel.core.errors import DistributedError

# The flags run_torchrun consumes; `worker_argv` strips them from the command the ranks run.
LAUNCH_FLAGS = ("--nproc-per-node", "--nnodes", "--rdzv-endpoint", "--rdzv-id", "--node-rank",
                "--max-restarts")


def torchrun_args(argv: list[str], nproc_per_node: int | str, nnodes: int | str = 1,
                  rdzv_endpoint: str | None = None, *, rdzv_id: str | None = None,
                  node_rank: int | None = None, max_restarts: int = 0,
                  module: str = "accel") -> list[str]:
    """The torchrun command line (without `torchrun`) that runs `python -m module *argv` per rank."""
    try:
        nproc = int(nproc_per_node)
    except (TypeError, ValueError):
        nproc = 0
    if nproc < 1:
        raise DistributedError(f"--nproc-per-node must be a positive number of processes, got {nproc_per_node!r}",
                               hint="e.g. --nproc-per-node 4 (one process per device on this node)")
    nodes = str(nnodes)
    multi_node = nodes != "1"
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nodes}", f"--max-restarts={max_restarts}"]
    if rdzv_endpoint:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id or 'accel'}"]
    elif multi_node:
        raise DistributedError(f"--nnodes {nodes} needs a rendezvous endpoint every node can reach",
                               hint="add --rdzv-endpoint HOST:PORT (the same on every node, e.g. the first node's address)")
    else:
        args.append("--standalone")
    if node_rank is not None:
        args.append(f"--node-rank={node_rank}")
    return [*args, "-m", module, *argv]


def run_torchrun(argv: list[str], nproc_per_node: int | str, nnodes: int | str = 1,
                 rdzv_endpoint: str | None = None, *, rdzv_id: str | None = None,
                 node_rank: int | None = None, max_restarts: int = 0, module: str = "accel") -> int:
    """Run `python -m accel *argv` on `nproc_per_node` local ranks under torchrun's agent (in
    this process) and wait. Returns 0; a failed rank raises DistributedError naming it (each
    rank's own error is in its output above)."""
    try:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import parse_args, run
    except Exception as exc:
        raise DistributedError(f"torchrun (torch.distributed.run) is not importable: {exc!r}",
                               hint="pip install 'accel-layer[torch]'") from None
    args = parse_args(torchrun_args(argv, nproc_per_node, nnodes, rdzv_endpoint, rdzv_id=rdzv_id,
                                    node_rank=node_rank, max_restarts=max_restarts, module=module))
    try:
        run(args)
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()
        others = sorted(set(exc.failures) - {rank})
        more = f" (and rank(s) {', '.join(map(str, others))})" if others else ""
        raise DistributedError(
            f"rank {rank} failed first with exit code {first.exitcode}{more}",
            hint="its own error is printed above; rerun with that rank's command to debug") from None
    return 0


def worker_argv(argv: list[str]) -> list[str]:
    """`argv` without the launch flags (`--nproc-per-node 4` and `--nproc-per-node=4` forms)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_FLAGS or name.replace("_", "-") in LAUNCH_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def backend_for_local_rank(spec: str | None, local_rank: int) -> str | None:
    """The accel backend of one local rank from a `--backend` value: one name for every rank
    (`torch:cuda` becomes `torch:cuda:<local_rank>`, one device per rank), or a comma list with
    one name per local rank (`torch:cpu,numpy,npusim`: a mixed fleet). None: not chosen here
    (ACCEL_BACKEND per process, else auto-detect)."""
    if spec is None or not spec.strip():
        return None
    names = [s.strip() for s in spec.split(",")]
    if any(not n for n in names):
        raise DistributedError(f"--backend {spec!r} has an empty entry",
                               hint="one backend per local rank, e.g. --backend torch:cpu,numpy,npusim")
    if len(names) == 1:
        return _one_device_per_rank(names[0], local_rank)
    if not 0 <= local_rank < len(names):
        raise DistributedError(
            f"--backend lists {len(names)} backends ({spec}) but this is local rank {local_rank}",
            hint=f"list one backend per local rank (--nproc-per-node {len(names)}), or name one for all")
    return names[local_rank]


def _one_device_per_rank(name: str, local_rank: int) -> str:
    """`torch:cuda` -> `torch:cuda:<local rank>` where the backend lists that device."""
    parts = name.split(":")
    if len(parts) != 2:
        return name
    from accel.core.registry import available_backends

    status = available_backends().get(parts[0])
    indexed = f"{parts[1]}:{local_rank}"
    return f"{name}:{local_rank}" if status is not None and indexed in status.devices else name
