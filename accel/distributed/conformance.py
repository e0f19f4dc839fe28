"""The collectives checked across real processes.

Every rank builds its own input for each case (the case's seed and its rank), runs the collective
on its backend, and judges its result against the numpy float64 reference over every rank's
input (`accel.ops.collective.ACROSS_RANKS`) with the conformance suite's tolerances. The cases
are the `collective` family's (odd and empty shapes, NaN/inf), in every dtype that every rank's
backend declares, so a mixed fleet runs only what all of its members store.

A vendor checks its plugin (or a mixed fleet) with:

    torchrun --standalone --nproc-per-node 3 -m accel.distributed.conformance --backend NAME[,NAME...]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from accel.core import dtypes as dt
from accel.core.dtypes import DType


@dataclass(frozen=True)
class Row:
    """One case on this rank: its id, whether it passed, and why not."""

    id: str
    passed: bool
    reason: str = ""


def _agreed_dtypes(backend) -> tuple[DType, ...]:
    """The dtypes every rank's backend stores (a bit mask per rank over ALL_DTYPES)."""
    from accel.distributed import process_group as pg

    mine = sum(1 << i for i, d in enumerate(dt.ALL_DTYPES) if d in backend.dtypes)
    masks = [int(m) for m in pg.exchange_strings(str(mine))] if pg.world_size() > 1 else [mine]
    common = mine
    for m in masks:
        common &= m
    return tuple(d for i, d in enumerate(dt.ALL_DTYPES) if common >> i & 1)


def _cases(op, dtype: DType, world: int):
    from accel.conformance.generators import FAMILIES

    params = dict(op.cases)
    if op.name == "broadcast":
        params["attrs"] = [{"src": 0}, {"src": world - 1}]
    for spec in FAMILIES[params["family"]](op, dtype, params):
        if op.name == "reduce_scatter":  # axis 0 must divide among the ranks
            yield from _scaled_leading(spec, world)
        else:
            yield spec


def _scaled_leading(spec, world: int):
    """A reduce_scatter case with axis 0 multiplied by the world size (odd shapes stay odd)."""
    def build(rng, inner=spec.build):
        (x,), attrs = inner(rng)
        return (np.concatenate([x] * world, axis=0) if x.shape[0] else x,), attrs
    yield type(spec)(spec.label + f" x{world} on axis 0", build, spec.quick, spec.layouts)


def rank_inputs(spec, seed: int, world: int) -> list[np.ndarray]:
    """Every rank's input for one case: rank r draws from (seed, r)."""
    return [spec.build(np.random.default_rng([seed, r]))[0][0] for r in range(world)]


def check_collectives(backend=None, *, op_names=None, dtypes=None) -> list[Row]:
    """Run every collective case on this rank (after accel.distributed.init); every rank must
    call this with the same arguments. Returns this rank's rows."""
    import accel
    from accel.conformance.generators import stable_seed
    from accel.conformance.judge import judge
    from accel.conformance.tolerances import tolerance_for
    from accel.distributed import process_group as pg
    from accel.ops import collective as collective_ops

    backend = accel.get_backend(backend)
    rank, world = pg.rank(), pg.world_size()
    agreed = _agreed_dtypes(backend)
    wanted = [collective_ops.all_reduce, collective_ops.reduce_scatter, collective_ops.all_gather,
              collective_ops.broadcast]
    rows: list[Row] = []
    for op in wanted:
        if op_names is not None and op.name not in op_names:
            continue
        for dtype in op.dtypes:
            if dtype not in agreed or (dtypes is not None and dtype not in dtypes):
                continue
            for spec in _cases(op, dtype, world):
                case_id = f"{op.name}[{dtype.name}] {spec.label}"
                seed = stable_seed(case_id)
                inputs = rank_inputs(spec, seed, world)
                attrs = spec.build(np.random.default_rng(seed))[1]
                try:
                    out = op(accel.from_numpy(inputs[rank], backend=backend), **attrs)
                    with np.errstate(all="ignore"):  # inf - inf in the special values: NaN is the answer
                        reference = collective_ops.ACROSS_RANKS[op.name](inputs, rank, **attrs)
                    verdict = judge(out.numpy(), reference, dtype, tolerance_for(op, dtype.name, backend.name))
                    rows.append(Row(case_id, verdict.passed, verdict.reason))
                except Exception as exc:  # a wrong shape/dtype rule shows as a failed row
                    rows.append(Row(case_id, False, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return rows


def check_buckets(backend=None, *, bucket_bytes: int = 64) -> list[Row]:
    """all_reduce_buckets over a parameter-like list (mixed sizes, two dtypes, an empty tensor)
    with buckets small enough to split it, against the float64 mean over every rank."""
    import accel
    from accel.conformance.judge import judge
    from accel.conformance.tolerances import tolerance_for
    from accel.distributed import collectives, process_group as pg
    from accel.ops import collective as collective_ops

    backend = accel.get_backend(backend)
    rank, world = pg.rank(), pg.world_size()
    shapes = [((7, 3), dt.float32), ((5,), dt.float32), ((0, 4), dt.float32), ((33,), dt.float32),
              ((2, 2), dt.float64), ((1,), dt.float32)]
    agreed = _agreed_dtypes(backend)
    shapes = [(s, d) for s, d in shapes if d in agreed]
    inputs = [[np.random.default_rng([i, r]).normal(size=s).astype(d.numpy) for r in range(world)]
              for i, (s, d) in enumerate(shapes)]
    tensors = [accel.from_numpy(x[rank], backend=backend) for x in inputs]
    outs = collectives.all_reduce_buckets(tensors, op="mean", bucket_bytes=bucket_bytes)
    rows = []
    for (shape, dtype), per_rank, out in zip(shapes, inputs, outs):
        ref = collective_ops.ACROSS_RANKS["all_reduce"](per_rank, rank, op="mean")
        verdict = judge(out.numpy(), ref, dtype, tolerance_for(collective_ops.all_reduce, dtype.name, backend.name))
        rows.append(Row(f"all_reduce_buckets[{dtype.name}] shape={shape} bucket_bytes={bucket_bytes}",
                        verdict.passed, verdict.reason))
    return rows


def main(argv: list[str] | None = None) -> int:
    from accel.distributed import launch, process_group as pg

    parser = argparse.ArgumentParser(prog="python -m accel.distributed.conformance",
                                     description="collectives across the ranks of this job")
    parser.add_argument("--backend", default=None,
                        help="this rank's backend, or a comma list: one per local rank")
    args = parser.parse_args(argv)
    import os

    spec = launch.backend_for_local_rank(args.backend, int(os.environ.get("LOCAL_RANK", "0")))
    info = pg.init(backend=spec)
    rows = check_collectives(info.accel_backend) + check_buckets(info.accel_backend)
    failed = [r for r in rows if not r.passed]
    counts = pg.exchange_strings(str(len(failed))) if info.world_size > 1 else [str(len(failed))]
    for row in failed:
        print(f"rank {info.rank} ({info.accel_backend}) FAIL {row.id}: {row.reason}", file=sys.stderr)
    if info.rank == 0:
        print(f"collectives on {info.world_size} ranks ({', '.join(pg.fleet())}) over {info.comm_backend}: "
              f"{len(rows)} cases per rank, failures per rank: {', '.join(counts)}")
    pg.shutdown()
    return 1 if any(int(c) for c in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
