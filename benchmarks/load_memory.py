"""Peak memory while loading a checkpoint, against the weights' size (goal: < 1.3x).

    python benchmarks/load_memory.py [--mb 430] [--backend numpy] [--dtype bfloat16]

Writes a random float32 Llama checkpoint of about `--mb` MB to a temporary directory, then, in a
fresh subprocess per case, imports accel, notes the resident set size (VmRSS), loads the model
with `accel.models.load_pretrained`, reads every weight once (so weights that stay memory-mapped
are resident and counted too), and reads the peak resident set size (VmHWM). The figure is
(peak - RSS before loading) / size of the loaded weights. Exit status 1 if a case is >= 1.3x.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

LIMIT = 1.3

_CHILD = r"""
import json, sys, time
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
import numpy as np, accel, accel.models
backend = accel.get_backend(sys.argv[2])
dtype = sys.argv[3] if sys.argv[3] != "none" else None
before = status("VmRSS")
start = time.perf_counter()
model = accel.models.load_pretrained(sys.argv[1], backend=backend, dtype=dtype)
backend.synchronize()
load_s = time.perf_counter() - start
after_load = status("VmRSS")
loaded = 0
for t in model.parameters().values():   # touch every weight: mapped pages become resident
    loaded += t.nbytes
    host = np.ascontiguousarray(t.numpy()).reshape(-1).view(np.uint8)
    int(host[::4096].sum())             # one byte per page
touched = status("VmRSS")
print(json.dumps({"before": before, "after_load": after_load, "touched": touched,
                  "peak": status("VmHWM"), "loaded_bytes": loaded, "load_s": load_s,
                  "dtype": model.dtype.name, "backend": backend.spec}))
"""


def write_checkpoint(folder: str, target_mb: float) -> int:
    """A Llama config sized to ~target_mb of float32 weights, with random weights. Returns bytes."""
    from accel.io.safetensors import save_safetensors
    from accel.models import LlamaConfig

    hidden, inter, vocab = 1024, 2752, 16000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((target_mb * 1e6 / 4 - fixed) / per_layer))
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=16,
                         max_position_embeddings=2048, torch_dtype="float32")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    rng = np.random.default_rng(0)

    class OnDemand(dict):
        """Holds zero-stride placeholders (shape and dtype, no memory); indexing makes the real
        random tensor, so the writer holds one tensor at a time."""

        def __getitem__(self, name):
            return rng.standard_normal(dict.__getitem__(self, name).shape, dtype=np.float32) * 0.02

    placeholders = OnDemand({n: np.broadcast_to(np.float32(0), s) for n, s in config.param_shapes().items()})
    save_safetensors(os.path.join(folder, "model.safetensors"), placeholders)
    return 4 * config.num_parameters()


def run_case(folder: str, backend: str, dtype: str | None) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, folder, backend, dtype or "none"],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"child failed ({backend}, {dtype}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=430.0, help="checkpoint size in MB (float32)")
    parser.add_argument("--backend", action="append", default=[], help="backends to load on (default: numpy)")
    parser.add_argument("--dtype", action="append", default=[],
                        help="dtypes to load as (default: as stored, and bfloat16)")
    args = parser.parse_args()
    backends = args.backend or ["numpy"]
    dtypes = args.dtype or [None, "bfloat16"]
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="accel-load-memory-") as folder:
        start = time.perf_counter()
        file_bytes = write_checkpoint(folder, args.mb)
        print(f"checkpoint: {file_bytes / 1e6:.0f} MB of float32 weights, written in "
              f"{time.perf_counter() - start:.1f} s")
        print(f"{'backend':<12} {'dtype':<9} {'loaded MB':>9} {'load s':>7} {'RSS before':>10} "
              f"{'peak':>8} {'peak-before':>11} {'ratio':>6}")
        for backend in backends:
            for dtype in dtypes:
                r = run_case(folder, backend, dtype)
                grown = r["peak"] - r["before"]
                ratio = grown / r["loaded_bytes"]
                worst = max(worst, ratio)
                print(f"{r['backend']:<12} {r['dtype']:<9} {r['loaded_bytes'] / 1e6:>9.0f} {r['load_s']:>7.2f} "
                      f"{r['before'] / 1e6:>8.0f}MB {r['peak'] / 1e6:>6.0f}MB {grown / 1e6:>9.0f}MB "
                      f"{ratio:>5.2f}x")
    verdict = "OK" if worst < LIMIT else "OVER"
    print(f"worst peak growth / loaded weights = {worst:.2f}x (limit {LIMIT}x): {verdict}")
    return 0 if worst < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
