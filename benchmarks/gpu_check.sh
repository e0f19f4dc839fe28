#!/usr/bin/env bash
# The GPU check of the torch backend, in under 8 minutes, into one results file.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          (default: gpu-check-results/)
#   GPU_CHECK_ALLOW_CPU=1 bash benchmarks/gpu_check.sh   (dry run of every step on torch:cpu)
#
# Made for a bare GPU machine whose python3 already has torch, jax, onnxruntime and transformers
# and that has no package index: accel is installed from this checkout with
# `pip install --no-deps --no-build-isolation -e .` when python3 cannot import it yet.
#
# Steps, in priority order, each under `timeout` and all under one deadline (GPU_CHECK_BUDGET_S,
# default 450 s; a step that would start with too little time left is recorded as not run):
#   environment         GPU, driver, torch/jax/onnxruntime versions, `accel info --backend torch`
#   cuda-tests          every test marked `cuda` (pytest -m cuda), on DEVICE
#   conformance         `accel conformance --ci` on DEVICE, summary and failures from its JSON
#   hf-parity           logits, greedy tokens and low-precision quality against transformers
#   flash-sdpa          accel attention run by torch's flash kernel only, against float64
#   fp8-scaled-mm       ops.scaled_matmul through torch._scaled_mm against the exact emulation
#                       (tensor/row scales, bfloat16/float32 out, e4m3/e5m2), the path of each
#   cudagraph-decode    compiled decode replayed as a CUDA graph: same tokens as eager, speed-up
#   fp8-bench           `accel bench --section fp8` on DEVICE at 4096³ and 8192³: FP8 GEMMs and an
#                       FP8 training step against bfloat16 (ratio × bf16; the H100 target is ≥ 1.6×
#                       for the pre-quantized GEMM), each row naming the path that ran
#   bench               `accel bench --section model` on DEVICE: eager and compiled vs HF on it
#   inductor-decode     the bench-size Llama in bfloat16 through inductor + CUDA graphs, batch 1:
#                       tokens/s and % of the HBM bandwidth bound
#
# GPU_CHECK_ONLY="fp8-scaled-mm fp8-bench" runs only the steps named (a rerun of a few within a
# short device lease); the others are left out of the results.
#
# Writes OUT_DIR/results.json (every step: status, seconds, limit, parsed figures, output tail)
# and OUT_DIR/results.md (the same as tables); the step logs stay in OUT_DIR/logs/.
# Environment: PYTHON (default python3, or .venv/bin/python when present), DEVICE (default
# torch:cuda:0; torch:cpu with GPU_CHECK_ALLOW_CPU=1). Exit status: 0 when every step that ran
# passed, 1 otherwise, 2 without a CUDA device (and no GPU_CHECK_ALLOW_CPU=1).
set -u -o pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT_DIR=${1:-gpu-check-results}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
CPU_RUN=${GPU_CHECK_ALLOW_CPU:-0}
ONLY=${GPU_CHECK_ONLY:-}
LOGS="$OUT_DIR/logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"
: > "$LOGS/steps.tsv"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# inductor's compile cache of this run only: a cold compile is what a fresh machine pays, and a
# stale or half-written entry elsewhere in /tmp cannot fail the check
# (a compile killed by its step's timeout leaves a half-written entry behind: wiped every run)
if [ -z "${TORCHINDUCTOR_CACHE_DIR:-}" ]; then
    export TORCHINDUCTOR_CACHE_DIR="$(cd "$OUT_DIR" && pwd)/inductor-cache"
    rm -rf "$TORCHINDUCTOR_CACHE_DIR"
fi

if [ "$CPU_RUN" = 1 ]; then
    DEVICE=${DEVICE:-torch:cpu}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
elif "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    DEVICE=${DEVICE:-torch:cuda:0}
else
    echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); GPU_CHECK_ALLOW_CPU=1 runs the steps on the CPU" >&2
    exit 2
fi

# step NAME LIMIT_S CMD...: run under `timeout` (capped by what is left of the budget), log it.
step() {
    local name=$1 limit=$2; shift 2
    if [ -n "$ONLY" ] && [ "$name" != install ] && [[ " $ONLY " != *" $name "* ]]; then
        return
    fi
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 15 ]; then
        printf '%s\tnot-run\t-\t0\t%s\n' "$name" "$limit" >> "$LOGS/steps.tsv"
        echo "gpu_check: $name not run (${left}s of the budget left)" >&2
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "gpu_check: $name (limit ${limit}s) ..." >&2
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    local status=pass
    [ "$rc" -ne 0 ] && status=fail
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status=timeout
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - start))" "$limit" >> "$LOGS/steps.tsv"
}

# accel itself: installed from this checkout without an index, when not importable yet
if ! "$PYTHON" -c 'import accel.backends.torch.backend' > /dev/null 2>&1; then
    step install 90 "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi

step environment 45 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null || echo 'nvidia-smi: not available'; \
    '$PYTHON' -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"devices\", torch.cuda.device_count())'; \
    '$PYTHON' -c 'import jax; print(\"jax\", jax.__version__, jax.devices())' 2>&1 | tail -1; \
    '$PYTHON' -c 'import onnxruntime as o; print(\"onnxruntime\", o.__version__, o.get_available_providers())' 2>&1 | tail -1; \
    '$PYTHON' -c 'import transformers; print(\"transformers\", transformers.__version__)' 2>&1 | tail -1; \
    '$PYTHON' -m accel.cli.main info --backend '$DEVICE'"

step cuda-tests 70 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -rs --backend "$DEVICE" tests

step conformance 90 "$PYTHON" -m accel.cli.main conformance --backend "$DEVICE" --ci --model skip \
    --no-progress --json "$LOGS/conformance.json"

step hf-parity 90 "$PYTHON" -m pytest -q -p no:cacheprovider -rs --backend "$DEVICE" \
    tests/models/test_hf_parity.py tests/models/test_hf_low_precision.py

for probe in flash-sdpa fp8-scaled-mm cudagraph-decode; do
    step "$probe" 60 "$PYTHON" benchmarks/gpu_probes.py "$probe" --device "$DEVICE"
done

# the CPU dry run: 1024³ (--quick), through torch's CPU _scaled_mm (scaled_mm=native), so the
# path column shows the call the GPU run makes; on the GPU the default (auto) picks it on CC ≥ 8.9
if [ "$CPU_RUN" = 1 ]; then FP8_RUN=(env ACCEL_TORCH_SCALED_MM=native); FP8_SIZE=(--quick --repeats 2)
else FP8_RUN=(env); FP8_SIZE=(--repeats 5); fi
step fp8-bench 120 "${FP8_RUN[@]}" "$PYTHON" -m accel.cli.main bench --section fp8 --backend "$DEVICE" \
    "${FP8_SIZE[@]}" --row-budget 30 --no-progress --out "$LOGS/fp8-bench"

if [ "$CPU_RUN" = 1 ]; then BENCH_SIZE=(--quick); else BENCH_SIZE=(--dtype bfloat16 --dtype float32); fi
step bench 130 "$PYTHON" -m accel.cli.main bench --section model --backend "$DEVICE" "${BENCH_SIZE[@]}" \
    --compiler python --repeats 3 --row-budget 30 --no-progress --out "$LOGS/bench"

step inductor-decode 150 "$PYTHON" benchmarks/gpu_probes.py inductor-decode --device "$DEVICE"

"$PYTHON" - "$OUT_DIR" "$DEVICE" "$SECONDS" "$CPU_RUN" <<'EOF'
"""Assemble the one results file (results.json) and its Markdown view from the step logs."""
import datetime
import json
import os
import re
import socket
import subprocess
import sys

out_dir, device, total_s, cpu_run = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
logs = os.path.join(out_dir, "logs")


def tail(name, n=25):
    try:
        with open(os.path.join(logs, name + ".log"), errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def pytest_counts(lines):
    for line in reversed(lines):
        found = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected|xfailed)", line))
        if found:
            return found
    return {}


def figures(name, lines):
    if name in ("cuda-tests", "hf-parity"):
        return pytest_counts(lines)
    if name in ("flash-sdpa", "fp8-scaled-mm", "cudagraph-decode", "inductor-decode"):
        for line in reversed(lines):
            if line.startswith("{"):
                return json.loads(line)
    if name == "conformance":
        try:
            report = json.load(open(os.path.join(logs, "conformance.json")))
        except (OSError, ValueError):
            return {}
        rows = report if isinstance(report, list) else report.get("rows", [])
        counts = {}
        for r in rows:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        fails = [f"{r.get('op')}[{r.get('dtype')}] {r.get('case', r.get('label', ''))}" for r in rows if r.get("status") == "fail"]
        return {"counts": counts, "failures": fails[:30]}
    if name == "bench":
        try:
            bench = json.load(open(os.path.join(logs, "bench", "bench.json")))
        except (OSError, ValueError):
            return {}
        rows = []
        for r in bench.get("model", {}).get("rows", []):
            cells = {label: {k: v for k, v in res.items() if k in ("tokens_per_s", "ratio_to_hf", "pct_of_bandwidth_bound", "skipped")}
                     for label, res in r.get("results", {}).items()}
            rows.append({"name": r["name"], "runner": r.get("runner"), "skipped": r.get("skipped"),
                         "same_tokens_as_hf": r.get("same_tokens_as_hf"), "results": cells})
        return {"rows": rows, "goals": bench.get("goals", [])}
    if name == "fp8-bench":
        try:
            fp8 = json.load(open(os.path.join(logs, "fp8-bench", "bench.json"))).get("fp8", {})
        except (OSError, ValueError):
            return {}
        keep = ("backend", "n", "row", "path", "median_s", "tflops", "ratio_to_bf16", "skipped")
        return {"gemm": [{k: g.get(k) for k in keep} for g in fp8.get("gemm", [])],
                "train": [{k: t.get(k) for k in ("row", "path", "median_s", "tokens_per_s", "ratio_to_bf16", "skipped")}
                          for t in fp8.get("train", [])]}
    return {}


steps = []
for line in open(os.path.join(logs, "steps.tsv")):
    name, status, rc, seconds, limit = line.rstrip("\n").split("\t")
    lines = tail(name)
    steps.append({"name": name, "status": status, "rc": None if rc == "-" else int(rc), "seconds": int(seconds),
                  "limit_s": int(limit), "figures": figures(name, tail(name, 400)), "output_tail": lines})
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "unknown"
result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "host": socket.gethostname(), "device": device, "cpu_dry_run": cpu_run, "commit": commit,
          "total_s": total_s, "passed": all(s["status"] == "pass" for s in steps if s["status"] != "not-run"),
          "steps": steps}
json.dump(result, open(os.path.join(out_dir, "results.json"), "w"), indent=1)

md = [f"# accel GPU check: {device}{' (CPU dry run)' if cpu_run else ''}", "",
      f"{result['date']}, host {result['host']}, commit {commit}, total {total_s} s", "",
      "| step | status | s (limit) | figures |", "|---|---|---:|---|"]
for s in steps:
    f = s["figures"]
    if s["name"] == "bench":
        text = f"{len(f.get('rows', []))} rows (below)"
    elif s["name"] == "fp8-bench":
        text = f"{len(f.get('gemm', []))} GEMM rows (below)"
    elif s["name"] == "conformance":
        text = json.dumps(f.get("counts", {}))
    else:
        text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items()
                         if k not in ("probe", "device", "output_tail"))
    md.append(f"| {s['name']} | {s['status']} | {s['seconds']} ({s['limit_s']}) | {text} |")
bench = next((s["figures"] for s in steps if s["name"] == "bench"), {})
if bench.get("rows"):
    labels = sorted({k for r in bench["rows"] for k in r["results"]})
    md += ["", "## bench (tokens/s, ratio to HF on the same device)", "",
           "| row | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for r in bench["rows"]:
        cells = []
        for label in labels:
            c = r["results"].get(label, {})
            cells.append("–" if "tokens_per_s" not in c else
                         f"{c['tokens_per_s']:.1f}" + (f" ({c['ratio_to_hf']:.2f}×)" if c.get("ratio_to_hf") else ""))
        md.append(f"| {r['name']} | " + " | ".join(cells) + " |")
fp8 = next((s["figures"] for s in steps if s["name"] == "fp8-bench"), {})
if fp8.get("gemm"):
    md += ["", "## fp8-bench (× bf16: the H100 target is ≥ 1.6 for the pre-quantized GEMM at ≥ 4096³)", "",
           "| n | GEMM | path | median s | TFLOP/s | × bf16 |", "|---:|---|---|---:|---:|---:|"]
    for g in fp8["gemm"]:
        md.append(f"| {g['n']} | {g['row']} | {g.get('path') or '–'} | " + (
            f"{g['median_s']:.4g} | {g['tflops']:.3g} | {g['ratio_to_bf16']:.2f} |" if g.get("median_s")
            else f"skipped: {g.get('skipped')} | | |"))
    md += ["", "| training step | path | median s | tokens/s | × bf16 |", "|---|---|---:|---:|---:|"]
    for t in fp8["train"]:
        md.append(f"| {t['row']} | {t.get('path') or '–'} | " + (f"{t['median_s']:.3f} | {t['tokens_per_s']:,.0f} | {t['ratio_to_bf16']:.2f} |"
                                        if t.get("median_s") else f"skipped: {t.get('skipped')} | | |"))
failed = [s for s in steps if s["status"] not in ("pass", "not-run")]
for s in failed:
    md += ["", f"## {s['name']}: {s['status']} (exit {s['rc']})", "", "```", *s["output_tail"], "```"]
open(os.path.join(out_dir, "results.md"), "w").write("\n".join(md) + "\n")
print(f"gpu_check: {'passed' if result['passed'] else 'FAILED: ' + ', '.join(s['name'] for s in failed)}; "
      f"wrote {out_dir}/results.json and results.md ({total_s}s)")
sys.exit(0 if result["passed"] else 1)
EOF
