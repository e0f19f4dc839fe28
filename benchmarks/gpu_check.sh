#!/usr/bin/env bash
# One-shot check of the torch backend on an NVIDIA GPU, in under 5 minutes, into one file:
#   1. environment (GPU, driver, torch, `accel info --backend torch`)
#   2. the conformance suite on torch:cuda (CI subset, every dtype) with its JSON report
#   3. the torch backend tests (CUDA-marked ones included) and the Hugging Face parity tests
#   4. the model benchmark: greedy generation on torch:cuda (float32, bfloat16) against numpy
#   5. `accel bench` on every GPU backend installed (torch:cuda, jax:gpu, onnxruntime:cuda) against
#      Hugging Face on CUDA, dispatch overhead per op included; its bench.md is appended and its
#      files kept beside RESULTS_FILE
#
#   bash benchmarks/gpu_check.sh [RESULTS_FILE]      (default: benchmarks/results/gpu_check-<host>-<time>.md)
#
# Environment: PYTHON (default .venv/bin/python, else python3), DEVICE (default torch:cuda:0).
# Every step has its own time limit; a failing step is recorded and the script goes on.
# Exit status: 0 if every step passed, 1 if one failed, 2 if there is no CUDA device.
set -u -o pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-torch:cuda:0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${1:-benchmarks/results/gpu_check-$(hostname -s)-$STAMP.md}
WORK=$(mktemp -d)
mkdir -p "$(dirname "$OUT")"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1
FAILED=()

# GPU_CHECK_ALLOW_CPU=1 DEVICE=torch:cpu runs the same steps on the CPU (a dry run of the script).
if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && \
   ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False)" >&2
    exit 2
fi

section() { printf '\n## %s\n\n```\n' "$1" >> "$OUT"; }
endsection() { printf '```\n' >> "$OUT"; }

# step NAME SECONDS CMD...: run with a time limit, append its output, remember a failure.
step() {
    local name=$1 limit=$2; shift 2
    section "$name"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >> "$OUT" 2>&1
    local rc=$?
    endsection
    printf '_%s: exit %d in %ds (limit %ds)_\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >> "$OUT"
    [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

{
    echo "# accel torch backend GPU check"
    echo
    echo "- date: $STAMP"
    echo "- host: $(hostname)"
    echo "- device: $DEVICE"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} > "$OUT"

step "environment" 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true; \
    '$PYTHON' -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"devices\", torch.cuda.device_count())'; \
    '$PYTHON' -m accel.cli.main info --backend torch"

step "conformance ($DEVICE, quick, all dtypes)" 150 \
    "$PYTHON" -m accel.cli.main conformance --backend "$DEVICE" --quick --no-progress \
    --json "$WORK/conformance.json"
if [ -s "$WORK/conformance.json" ]; then
    section "conformance failures (from the JSON report)"
    "$PYTHON" - "$WORK/conformance.json" >> "$OUT" 2>&1 <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print("summary:", json.dumps(report.get("summary", {})))
for r in report.get("rows", []):
    if r.get("status") == "fail":
        print(f"FAIL {r.get('op')}[{r.get('dtype')}] {r.get('case')} layout={r.get('layout')}: "
              f"nmse={r.get('nmse')} scaled_max={r.get('scaled_max')}")
EOF
    endsection
fi

step "torch backend tests + Hugging Face parity ($DEVICE)" 120 \
    "$PYTHON" -m pytest -q -p no:cacheprovider --backend "$DEVICE" \
    tests/backends/test_torch_backend.py tests/backends/test_torch_ops.py tests/models

step "model benchmark: greedy generation" 90 bash -c "
    set -e
    for dtype in float32 bfloat16; do
        '$PYTHON' -m accel.cli.main generate --backend '$DEVICE' --dtype \$dtype \
            --prompt 'Once upon a time' --max-new-tokens 128 > '$WORK/gen-cuda-'\$dtype.txt 2> '$WORK/gen-cuda-'\$dtype.err
        echo \"$DEVICE \$dtype: \$(tail -n 1 '$WORK/gen-cuda-'\$dtype.err)\"
    done
    '$PYTHON' -m accel.cli.main generate --backend numpy --prompt 'Once upon a time' \
        --max-new-tokens 128 > '$WORK/gen-numpy.txt' 2> '$WORK/gen-numpy.err'
    echo \"numpy float32: \$(tail -n 1 '$WORK/gen-numpy.err')\"
    if cmp -s '$WORK/gen-numpy.txt' '$WORK/gen-cuda-float32.txt'; then
        echo 'greedy text: $DEVICE float32 == numpy'
    else
        echo 'greedy text DIFFERS between $DEVICE float32 and numpy:'; diff '$WORK/gen-numpy.txt' '$WORK/gen-cuda-float32.txt'; exit 1
    fi"

GPU_BACKENDS=$("$PYTHON" - "$DEVICE" <<'EOF'
import sys
import accel
specs = [sys.argv[1]]
for spec in ("jax:gpu", "onnxruntime:cuda"):
    try:
        accel.get_backend(spec)
        specs.append(spec)
    except accel.AccelError:
        pass
print(" ".join(f"--backend {s}" for s in specs))
EOF
)
BENCH_DIR="${OUT%.md}-bench"
step "accel bench ($GPU_BACKENDS)" 420 \
    "$PYTHON" -m accel.cli.main bench $GPU_BACKENDS --out "$BENCH_DIR" --no-progress --row-budget 120
[ -s "$BENCH_DIR/bench.md" ] && { printf '\n'; cat "$BENCH_DIR/bench.md"; } >> "$OUT"

{
    echo
    echo "## summary"
    echo
    if [ ${#FAILED[@]} -eq 0 ]; then echo "every step passed"; else printf -- '- FAILED: %s\n' "${FAILED[@]}"; fi
    echo "total: ${SECONDS}s"
} >> "$OUT"
echo "gpu_check: wrote $OUT (${SECONDS}s)"
[ ${#FAILED[@]} -eq 0 ]
