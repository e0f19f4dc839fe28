"""Gradient buckets launched during the backward pass vs after it: `accel train` on 2 ranks
(gloo, through torchrun) with ACCEL_TRAIN_OVERLAP=1 (the default: each bucket's all-reduce
starts from value_and_grad's on_grad_ready hook) and =0 (every bucket launched once the
backward has returned), run alternately so both see the same load; the figure is the ratio of
tokens/s in each pair, its median over the pairs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overlap_buckets.py --model-config tiny --repeats 3

The reduced values are the same either way (tests/distributed/test_train_data_parallel.py
checks the overlapped runs against one process); only when each bucket leaves changes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from accel.bench.distributed_training import _run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", default="tiny")
    parser.add_argument("--backend", action="append", help="default: numpy and torch:cpu")
    parser.add_argument("--bucket-mb", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backend or ["numpy", "torch:cpu"]:
        pairs = []
        for repeat in range(args.repeats):
            pair = {}
            for mode in (("after", "0"), ("during", "1")) if repeat % 2 == 0 else (("during", "1"), ("after", "0")):
                os.environ["ACCEL_TRAIN_OVERLAP"] = mode[1]
                pair[mode[0]] = _run(backend, 2, args.steps, 0, ["--model-config", args.model_config,
                                                                  "--bucket-mb", str(args.bucket_mb)])
                if "error" in pair[mode[0]]:
                    print(f"{backend} {mode[0]}: {pair[mode[0]]['error']}", file=sys.stderr)
                    return 1
            pair["ratio"] = pair["during"]["tokens_per_s"] / pair["after"]["tokens_per_s"]
            pairs.append(pair)
            print(f"{backend} pair {repeat}: during {pair['during']['tokens_per_s']:.0f} tok/s, after "
                  f"{pair['after']['tokens_per_s']:.0f} tok/s, ratio {pair['ratio']:.3f}", flush=True)
        ratios = [p["ratio"] for p in pairs]
        rows.append({"backend": backend, "pairs": pairs, "median_ratio": statistics.median(ratios)})
        print(f"{backend}: during/after tokens/s median {statistics.median(ratios):.3f} "
              f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})")
    os.environ.pop("ACCEL_TRAIN_OVERLAP", None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
